"""Which server the CLI talks to: named servers (`context add|list|use`).

Contexts live in `contexts.toml` in the user config dir (`~/.config/chain429`
on Linux; `$CHAIN429_CONFIG_DIR` moves it). The file is read and written with
tomlkit, so comments and hand edits survive every command:

    current = "prod"

    [contexts.prod]
    server = "https://llm.example.com"
    admin_key_env = "PROD_CHAIN429_ADMIN_KEY"   # the variable's name, never the key

A context never holds a key itself, only the name of the environment variable
that holds it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .options import JsonOption
from .output import fail, print_json, say, table

if TYPE_CHECKING:
    import tomlkit

# platformdirs and tomlkit load when a context is read or written, not when the
# commands are declared (see main.py on start-up).

CONFIG_DIR_ENV = "CHAIN429_CONFIG_DIR"


class ContextError(Exception):
    """The contexts file cannot be read, or names something that is not there."""


@dataclass(frozen=True)
class Context:
    name: str
    server: str
    admin_key_env: str | None = None


def contexts_path() -> Path:
    """`$CHAIN429_CONFIG_DIR/contexts.toml`, else the user config dir's."""
    import platformdirs

    directory = os.environ.get(CONFIG_DIR_ENV)
    base = Path(directory).expanduser() if directory else platformdirs.user_config_path("chain429")
    return base / "contexts.toml"


def load_document(path: Path | None = None) -> tomlkit.TOMLDocument:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    path = path or contexts_path()
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return tomlkit.document()
    except (OSError, UnicodeDecodeError) as err:
        raise ContextError(f"cannot read {path}: {err}") from None
    except TOMLKitError as err:
        raise ContextError(f"{path} is not valid TOML: {err}") from None


def save_document(document: tomlkit.TOMLDocument, path: Path | None = None) -> None:
    """Write atomically: a crash never leaves half a file."""
    import tomlkit

    path = path or contexts_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".contexts-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(tomlkit.dumps(document))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _table(document: tomlkit.TOMLDocument) -> Any:
    found = document.get("contexts")
    return found if isinstance(found, dict) else {}


def _context(name: str, values: Any) -> Context:
    if not isinstance(values, dict) or not isinstance(values.get("server"), str):
        raise ContextError(f"context {name!r} in {contexts_path()} has no server")
    env = values.get("admin_key_env")
    return Context(name, str(values["server"]), str(env) if env else None)


def all_contexts(document: tomlkit.TOMLDocument) -> list[Context]:
    return [_context(str(name), values) for name, values in _table(document).items()]


def current_name(document: tomlkit.TOMLDocument) -> str | None:
    value = document.get("current")
    return str(value) if value else None


def current_context() -> Context | None:
    """The context `context use` chose, or None; an unknown name is an error."""
    document = load_document()
    name = current_name(document)
    if name is None:
        return None
    contexts = _table(document)
    if name not in contexts:
        raise ContextError(f"the current context {name!r} is not in {contexts_path()}")
    return _context(name, contexts[name])


def check_server(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
        raise ContextError(f"the server must be an http:// or https:// URL, got {url!r}")
    return url


def add_context(name: str, server: str, admin_key_env: str | None) -> bool:
    """Add or update a context, keeping everything else in the file; True if new."""
    import tomlkit

    server = check_server(server)
    if admin_key_env is not None and not admin_key_env.replace("_", "a").isalnum():
        raise ContextError(
            f"--admin-key-env takes the name of an environment variable, got {admin_key_env!r}"
        )
    document = load_document()
    contexts = document.get("contexts")
    if not isinstance(contexts, dict):
        contexts = tomlkit.table(is_super_table=True)
        document["contexts"] = contexts
    existing = contexts.get(name)
    if isinstance(existing, dict):
        existing["server"] = server
        if admin_key_env is not None:
            existing["admin_key_env"] = admin_key_env
        created = False
    else:
        entry = tomlkit.table()
        entry["server"] = server
        if admin_key_env is not None:
            entry["admin_key_env"] = admin_key_env
        contexts[name] = entry
        created = True
    save_document(document)
    return created


def use_context(name: str) -> None:
    document = load_document()
    contexts = _table(document)
    if name not in contexts:
        known = ", ".join(str(n) for n in contexts) or "none (add one with `context add`)"
        raise ContextError(f"no context named {name!r}; contexts: {known}")
    document["current"] = name  # tomlkit keeps top-level keys above the tables
    save_document(document)


context_app = typer.Typer(
    help="Named servers for the commands that talk to one. They live in contexts.toml in the "
    f"user config dir; set ${CONFIG_DIR_ENV} to use another directory.",
    no_args_is_help=True,
)


@context_app.command("add")
def add_command(
    name: Annotated[str, typer.Argument(help="Context name.")],
    server: Annotated[str, typer.Option("--server", help="The server's URL.")],
    admin_key_env: Annotated[
        str | None,
        typer.Option(
            "--admin-key-env",
            help="Environment variable that holds the admin key (the key is never stored).",
        ),
    ] = None,
) -> None:
    """Add a context (or update one of that name); comments in the file are kept."""
    try:
        created = add_context(name, server, admin_key_env)
    except ContextError as err:
        raise fail(str(err)) from None
    say(f"{'added' if created else 'updated'} context {name} in {contexts_path()}")
    document = load_document()
    if current_name(document) != name:
        say(f"switch to it with: chain429 context use {name}")


@context_app.command("list")
def list_command(
    as_json: JsonOption = False,
) -> None:
    """List contexts; `*` marks the current one."""
    try:
        document = load_document()
        contexts = all_contexts(document)
    except ContextError as err:
        raise fail(str(err)) from None
    current = current_name(document)
    if as_json:
        print_json(
            {
                "path": str(contexts_path()),
                "current": current,
                "contexts": [
                    {
                        "name": c.name,
                        "server": c.server,
                        "admin_key_env": c.admin_key_env,
                        "current": c.name == current,
                    }
                    for c in contexts
                ],
            }
        )
        return
    if not contexts:
        say(
            f"no contexts in {contexts_path()}; "
            "add one with: chain429 context add NAME --server URL"
        )
        return
    rows = [
        ["*" if c.name == current else "", c.name, c.server, c.admin_key_env or ""]
        for c in contexts
    ]
    table(["CURRENT", "NAME", "SERVER", "ADMIN KEY ENV"], rows, title="Contexts")


@context_app.command("use")
def use_command(name: Annotated[str, typer.Argument(help="Context name.")]) -> None:
    """Make NAME the current context."""
    try:
        use_context(name)
    except ContextError as err:
        raise fail(str(err)) from None
    say(f"current context: {name}")


def register(app: typer.Typer) -> None:
    """Add `context add|list|use` to the CLI."""
    app.add_typer(context_app, name="context")
