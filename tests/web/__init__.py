"""Browser tests of the web UI (a package, so its conftest does not shadow tests/conftest.py)."""
