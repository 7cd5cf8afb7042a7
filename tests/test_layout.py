"""The rooms of chain429/ and the directions imports may take between them (docs/design.md).

Each room's `__init__.py` says what it owns and what it may import; this test
holds the code to it, from the code's own import statements (imports under
`if TYPE_CHECKING:` count too: a type is a dependency). Arrows point down:

    server ──> routing ──> upstream
       │          │           ▲
       ├──> requestlog ──> config
       └──────────────────────┘
    fakes: provider/replies/script/faults import nothing of ours; the demo and the
    fault matrix build a server.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "chain429"
ROOMS = ("config", "upstream", "routing", "server", "requestlog", "fakes")

# room -> the rooms it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "upstream": set(),
    "config": {"upstream"},
    "requestlog": {"config", "upstream"},
    "routing": {"upstream", "config", "requestlog"},
    "server": {"routing", "upstream", "config", "requestlog"},
    "fakes": {"server", "routing", "upstream", "config", "requestlog"},
}
# Within fakes, only the demo and the fault matrix build a server; the fake
# itself, and the fault catalogue made of its scripts, stand alone.
STANDALONE = {"fakes/provider.py", "fakes/replies.py", "fakes/script.py", "fakes/faults.py"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "chain429":  # `from chain429 import config` names a room
                names.update(f"chain429.{alias.name}" for alias in node.names)
    return names


CLIENTS = ("chain429.cli", "chain429.web", "cli", "web")


def is_client(module: str) -> bool:
    """`chain429.web` and its modules; not a module named like it (`chain429.server.web_ui`)."""
    return any(module == client or module.startswith(f"{client}.") for client in CLIENTS)


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "chain429" and parts[1] in ROOMS else None


def engine_files() -> list[Path]:
    return sorted(ENGINE.rglob("*.py"))


def test_every_module_lives_in_a_room():
    loose = [p.name for p in ENGINE.glob("*.py") if p.name != "__init__.py"]
    assert loose == []
    assert sorted(p.name for p in ENGINE.iterdir() if p.is_dir() and p.name != "__pycache__") == (
        sorted(ROOMS)
    )


@pytest.mark.parametrize("room", ROOMS)
def test_each_room_says_what_it_owns_and_may_import(room):
    docstring = ast.get_docstring(ast.parse((ENGINE / room / "__init__.py").read_text()))
    assert docstring and "May import" in docstring, room


def test_imports_between_rooms_go_the_allowed_way():
    wrong = []
    for path in engine_files():
        relative = path.relative_to(ENGINE).as_posix()
        room = relative.split("/")[0] if "/" in relative else None
        if room is None:
            continue  # chain429/__init__.py: the public surface, which may name anything
        allowed = set() if relative in STANDALONE else ALLOWED[room]
        for module in imported_modules(path):
            target = room_of(module)
            if target is not None and target != room and target not in allowed:
                wrong.append(f"{relative} imports {module}")
    assert wrong == []


def test_only_the_server_imports_sanic():
    users = {
        path.relative_to(ENGINE).as_posix()
        for path in engine_files()
        if any(m == "sanic" or m.startswith("sanic.") for m in imported_modules(path))
    }
    assert users and all(user.startswith("server/") for user in users), users


def test_the_engine_imports_neither_cli_nor_web():
    offenders = {
        path.relative_to(ENGINE).as_posix(): sorted(
            name for name in imported_modules(path) if is_client(name)
        )
        for path in engine_files()
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_the_rule_tells_a_client_from_an_engine_module_of_a_like_name():
    assert is_client("chain429.web") and is_client("chain429.web.static") and is_client("cli.main")
    assert not is_client("chain429.server.web_ui") and not is_client("webbrowser")


@pytest.mark.parametrize(
    "module,room",
    [("chain429.routing.router", "routing"), ("chain429.cli.main", None), ("httpx", None)],
)
def test_rooms_are_told_apart(module, room):
    assert room_of(module) == room
