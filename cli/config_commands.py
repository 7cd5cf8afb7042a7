"""Commands that write the config file: init, provider ..., chain ..."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
