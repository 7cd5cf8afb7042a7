"""How the CLI talks: data on stdout, messages on stderr, one-line errors.

On a terminal, tables are rich tables with colour; piped, they are plain
tab-separated lines a script can cut. `--json` everywhere prints the data
as JSON instead. Typer's own usage errors and help are fitted to the same
style here (`typer_style`).
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    stdout: Console
    stderr: Console

# rich costs a tenth of a second to import, and `--version`, `--help` and `validate`
# never draw with it: the two consoles are made on first use (PEP 562), as
# `output.stdout` / `output.stderr`.
_CONSOLES = {"stdout": False, "stderr": True}


def _console(name: str) -> Console:
    made: Console | None = globals().get(name)
    if made is None:
        from rich.console import Console

        made = Console(stderr=_CONSOLES[name], highlight=False, soft_wrap=True)
        globals()[name] = made  # later reads find it without calling __getattr__
    return made


def __getattr__(name: str) -> Console:
    if name not in _CONSOLES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _console(name)


def interactive() -> bool:
    return sys.stdout.isatty()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None
) -> None:
    """Rows as a rich table on a terminal, as tab-separated lines when piped."""
    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    if not interactive():
        plain_line(columns)
        for row in cells:
            plain_line(row)
        return
    _console("stdout").print(rich_table(columns, cells, title=title))


def rich_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None
) -> Table:
    """The one look of a table on a terminal: `table` prints it, and the live views
    (`status --watch`, `chain test`) redraw it. A cell may be text (with rich markup), a
    renderable (a spinner), or anything else, shown as `str` would."""
    from rich.protocol import is_renderable
    from rich.table import Table

    drawn = Table(title=title, header_style="bold")
    for column in columns:
        drawn.add_column(column)
    for row in rows:
        drawn.add_row(*("" if c is None else c if is_renderable(c) else str(c) for c in row))
    return drawn


def plain_line(cells: Sequence[str]) -> None:
    """One row as a script reads it: tab-separated, on stdout."""
    sys.stdout.write("\t".join(cells) + "\n")


def say(message: str) -> None:
    """Talk (progress, confirmations) goes to stderr, so stdout stays data."""
    _console("stderr").print(message)


def fail(message: str, code: int = 2) -> typer.Exit:
    """One clear line on stderr, and the exit code (kubectl's: 1 failed check, 2 error)."""
    _console("stderr").print(
        f"[red]error:[/red] {message}" if sys.stderr.isatty() else f"error: {message}"
    )
    return typer.Exit(code)


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`1 entry`, `2 entries`: a count with its noun in the right form."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


# -- cells: how values read in tables and lines ----------------------------------


def ms(value: Any) -> str:
    """Milliseconds to a tenth, `-` when there are none."""
    return "-" if value is None else f"{float(value):.1f}"


def cell(value: Any) -> str:
    """A value as a table shows it: `-` where there is none (never Python's `None`)."""
    return "-" if value is None else str(value)


def local_time(value: str) -> str:
    """An ISO moment as the local `YYYY-MM-DD HH:MM:SS CET`, its zone named (as given, if
    it is not one)."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def until_text(value: str | None) -> str:
    """ISO time when piped; `in 29s` on a terminal."""
    if not value or not interactive():
        return value or ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    seconds = max(0, int((moment - datetime.now(UTC)).total_seconds()))
    if seconds < 120:
        return f"in {seconds}s"
    if seconds < 7200:
        return f"in {seconds // 60}m"
    return f"in {seconds // 3600}h{seconds % 3600 // 60:02d}m"


def time_text(value: str | None) -> str:
    """ISO 8601 when piped; `2026-11-26 10:00:00` (UTC) on a terminal, to leave room."""
    if not value or not interactive():
        return value or ""
    return value[:19].replace("T", " ")


def typer_style() -> None:
    """Typer's own output, fitted to ours (applied once, when the CLI is imported).

    A usage error (an unknown option, a bad value) is one `error:` line saying
    where help is, like every other error, instead of a box titled "Error"; and
    a flag shows no `<bool>` type in help, since it takes no value. Typer's rich
    module loads only when help is shown (a tenth of the CLI's start-up time), so
    the error printer is put where typer looks for it without loading it.
    """
    import typer
    from typer import core

    option: Any = getattr(core, "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if shown is None or getattr(shown, "_chain429", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if self.is_flag and self.metavar is None else shown(self, ctx)

    display_type_rich._chain429 = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich

    def usage_error(exc: Any) -> None:
        if type(exc).__name__ == "NoArgsIsHelpError":  # typer has printed the help
            return
        message = exc.format_message().rstrip(".")
        if message[1:2].islower():  # "No such option" reads as our errors do
            message = message[0].lower() + message[1:]
        ctx = getattr(exc, "ctx", None)
        fail(f"{message} (see `{ctx.command_path} --help`)" if ctx is not None else message)

    def ours(module: Any) -> Any:
        module.rich_format_error = usage_error
        return module

    if "typer.rich_utils" in sys.modules:
        ours(sys.modules["typer.rich_utils"])
        return

    class RichUtils(types.ModuleType):
        """What `from . import rich_utils` in typer.core finds: our error printer, and
        the real module (loaded, and given our printer) for anything else."""

        def __getattr__(self, name: str) -> Any:
            return getattr(ours(_load_rich_utils()), name)

    setattr(typer, "rich_utils", ours(RichUtils("typer.rich_utils")))  # noqa: B010


class _Markdown:
    """rich.markdown.Markdown for typer.rich_utils, imported when one is made: only
    typer's "markdown" markup mode makes one, and ours is "rich"."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from rich.markdown import Markdown

        return Markdown(*args, **kwargs)


class _Traceback:
    """rich.traceback.Traceback for typer.rich_utils, imported when one is made: typer
    draws one only for its pretty exceptions, which the CLI turns off."""

    @classmethod
    def from_exception(cls, *args: Any, **kwargs: Any) -> Any:
        from rich.traceback import Traceback

        return Traceback.from_exception(*args, **kwargs)


def _load_rich_utils() -> types.ModuleType:
    """typer.rich_utils (which draws help), without the two rich modules it imports
    but does not use for us.

    It imports rich.markdown (markdown-it, pygments) and rich.traceback at the top:
    60-100 ms of the ~250 ms `chain429 --help` took, for classes it never makes
    here. While it loads, those two names are stand-ins that import the real class
    on first use; then they leave sys.modules, so any later `import rich.markdown`
    loads the real module. docs/cli.md's test shows the help is unchanged.
    """
    stand_ins = {}
    for name, attribute, stand_in in (
        ("rich.markdown", "Markdown", _Markdown),
        ("rich.traceback", "Traceback", _Traceback),
    ):
        if name not in sys.modules:
            module = types.ModuleType(name)
            setattr(module, attribute, stand_in)
            stand_ins[name] = sys.modules[name] = module
    try:
        return importlib.import_module("typer.rich_utils")
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def port_in_use(port: int) -> typer.Exit:
    """The one line for a port another program holds (serve, demo, fake)."""
    return fail(f"port {port} is in use; pick another with --port")
