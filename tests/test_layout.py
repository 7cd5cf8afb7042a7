"""The layout's one hard rule: the engine never imports its clients (cli, web)."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "chain429"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


CLIENTS = ("chain429.cli", "chain429.web", "cli", "web")


def is_client(module: str) -> bool:
    """`chain429.web` and its modules; not an engine module named like it (`chain429.web_ui`)."""
    return any(module == client or module.startswith(f"{client}.") for client in CLIENTS)


def test_the_engine_imports_neither_cli_nor_web():
    offenders = {
        path.name: sorted(name for name in imported_modules(path) if is_client(name))
        for path in ENGINE.glob("*.py")
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_the_rule_tells_a_client_from_an_engine_module_of_a_like_name():
    assert is_client("chain429.web") and is_client("chain429.web.static") and is_client("cli.main")
    assert not is_client("chain429.web_ui") and not is_client("webbrowser")
