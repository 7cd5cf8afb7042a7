"""Commands that talk to a running server: status, stats, logs, reload, diff, config, context."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
