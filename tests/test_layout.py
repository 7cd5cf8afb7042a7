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


def test_the_engine_imports_neither_cli_nor_web():
    offenders = {
        path.name: sorted(
            name
            for name in imported_modules(path)
            if name.startswith(("chain429.cli", "chain429.web", "cli", "web"))
        )
        for path in ENGINE.glob("*.py")
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}
