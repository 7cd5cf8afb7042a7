"""The chain429 web UI: static files served by the server, talking to the admin API."""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
