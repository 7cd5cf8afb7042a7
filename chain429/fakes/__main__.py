"""`python -m chain429.fakes`: run the fake provider (see `chain429 fake` for scripts)."""

from chain429.fakes.provider import main

main()
