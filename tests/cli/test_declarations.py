"""Each option of the CLI, and the look of a table, is declared once (cli/options.py).

A flag reads the same in every command that takes it (`--config`, `--server`,
`--json`...), because it is one declaration imported everywhere; the few flags
whose meaning differs between commands are listed below with the reason. And
every table the CLI draws comes from `chain429.cli.output`.
"""

from __future__ import annotations

import ast
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer.main

from chain429.cli.main import app

CLI = Path(__file__).resolve().parents[2] / "cli"

# (command, flag) -> why that command's flag means something else than the others'.
DIFFERENT = {
    ("init", "--config"): "the file to write, not one to find",
    ("context add", "--server"): "the URL to store in a context, not the server to talk to",
    ("chain entry remove", "--at"): "which of two equal entries, not where to put one",
    ("logs", "--count"): "new requests to print, not refreshes of `status --watch`",
    ("logs", "--provider"): "a filter on the log, not a provider to set up (`init`)",
    ("fake", "--host"): "the fake provider's address, not the proxy's",
    ("fake", "--name"): "the fake provider's name in its answers, not a display name",
    ("fake", "--port"): "the fake provider's port",
    ("demo", "--port"): "the demo proxy's port (no config file)",
    ("init", "--port"): "the port written into the new file",
    ("provider set", "--paid"): "`--paid/--free`: it can unset it too",
    ("selftest", "--chain"): "repeatable: the chains to play, not one chain to filter a log by",
}


def commands() -> Iterator[tuple[str, Any]]:
    def walk(group: Any, prefix: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from walk(command, (*prefix, name))
            else:
                yield " ".join((*prefix, name)), command

    return walk(typer.main.get_command(app), ())


def options() -> dict[str, dict[str, tuple[Any, ...]]]:
    """flag -> command -> what `--help` says of it (text, spellings, default shown)."""
    found: dict[str, dict[str, tuple[Any, ...]]] = defaultdict(dict)
    for path, command in commands():
        for param in command.params:
            if param.param_type_name == "option" and "--help" not in param.opts:
                flag = max(param.opts, key=len)
                found[flag][path] = (
                    param.help,
                    tuple(param.opts),
                    tuple(param.secondary_opts),
                    param.show_default,
                )
    return found


def test_a_flag_reads_the_same_in_every_command():
    for flag, by_command in options().items():
        alike = {path: seen for path, seen in by_command.items() if (path, flag) not in DIFFERENT}
        assert len(set(alike.values())) <= 1, (flag, alike)


def test_the_flags_said_to_differ_do():
    found = options()
    for path, flag in DIFFERENT:
        assert path in found[flag], (path, flag)
        others = {seen for other, seen in found[flag].items() if other != path}
        assert found[flag][path] not in others, (path, flag)


def test_config_and_server_appear_where_expected():
    found = options()
    assert {"serve", "validate", "status", "diff", "chain set", "config show"} <= set(
        found["--config"]
    )
    assert {"status", "reload", "provider add", "settings set", "limits clear"} <= set(
        found["--server"]
    )


def _declared_flags() -> Counter[str]:
    """How many `typer.Option("--flag", ...)` calls spell each flag in cli/."""
    spelled: Counter[str] = Counter()
    for path in CLI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "Option"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and str(node.args[0].value).startswith("--")
            ):
                spelled[str(node.args[0].value).split("/")[0]] += 1
    return spelled


def test_each_flag_is_declared_once_per_meaning():
    meanings = Counter(flag for _, flag in DIFFERENT)
    spelled = _declared_flags()
    assert spelled["--config"] == 1 and spelled["--json"] == 1
    for flag, count in spelled.items():
        assert count <= 1 + meanings[flag], (flag, count)


def test_one_table_helper_draws_every_table():
    """Only `output.rich_table` builds a rich `Table`; `output.table` prints it or, piped,
    tab-separated lines."""
    drawers = []
    for path in CLI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and "Table" in (
                getattr(node.func, "id", None),
                getattr(node.func, "attr", None),
            ):
                drawers.append(path.name)
    assert drawers == ["output.py"]
