"""How the CLI talks: data on stdout, messages on stderr, one-line errors.

On a terminal, tables are rich tables with colour; piped, they are plain
tab-separated lines a script can cut. `--json` everywhere prints the data
as JSON instead.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def interactive() -> bool:
    return sys.stdout.isatty()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None
) -> None:
    """Rows as a rich table on a terminal, as tab-separated lines when piped."""
    rows = [["" if cell is None else str(cell) for cell in row] for row in rows]
    if not interactive():
        sys.stdout.write("\t".join(columns) + "\n")
        for row in rows:
            sys.stdout.write("\t".join(row) + "\n")
        return
    rich_table = Table(title=title, header_style="bold")
    for column in columns:
        rich_table.add_column(column)
    for row in rows:
        rich_table.add_row(*row)
    stdout.print(rich_table)


def say(message: str) -> None:
    """Talk (progress, confirmations) goes to stderr, so stdout stays data."""
    stderr.print(message)


def fail(message: str, code: int = 2) -> typer.Exit:
    """One clear line on stderr, and the exit code (kubectl's: 1 failed check, 2 error)."""
    stderr.print(f"[red]error:[/red] {message}" if sys.stderr.isatty() else f"error: {message}")
    return typer.Exit(code)
