"""The chain429 command line: a client of the engine and of the admin API."""
