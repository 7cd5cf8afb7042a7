"""`chain429 alias add|list|remove`: other names for chains, in the config file.

An app that hard-codes `model="gpt-4o-mini"` lands on a chain of your choice
when `aliases:` maps that name to it. Edits go through
`config_commands.write_change` (the one write path, keeping the file's
comments, then a reload of a running server), as `chain ...` does; the web UI
and other clients use `PUT|DELETE /v1/admin/aliases/<name>`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from . import output
from .config_commands import config_path, find_chain, load_document, write_change
from .options import ConfigOption, JsonOption, ServerOption
from .output import fail, say

if TYPE_CHECKING:
    from chain429.config.writer import ConfigDocument

alias_app = typer.Typer(
    help="Aliases in the config file: other names a request's `model` may use for a chain.",
    no_args_is_help=True,
)

AliasArgument = Annotated[
    str,
    typer.Argument(
        metavar="ALIAS", help="The name apps send as `model` (gpt-4o-mini, openai/gpt-4o-mini)."
    ),
]


def _aliases(document: ConfigDocument) -> dict[str, str]:
    found = document.raw().get("aliases")
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


@alias_app.command("add")
def alias_add(
    alias: AliasArgument,
    chain: Annotated[str, typer.Argument(metavar="CHAIN", help="The chain it names.")],
    config: ConfigOption = None,
    server: ServerOption = None,
) -> None:
    """Make ALIAS another name for CHAIN (or point an existing alias at CHAIN)."""
    path = config_path(config)

    def check(document: ConfigDocument) -> str | None:
        """The chain ALIAS names now, if any; exit 2 if the change cannot be made."""
        data = document.raw()
        find_chain(data, chain)
        if any(c.get("name") == alias for c in data.get("chains") or [] if isinstance(c, dict)):
            raise fail(f"{alias!r} is a chain's name already: a request naming it gets that chain")
        return _aliases(document).get(alias)

    before = check(load_document(path))
    if before == chain:
        say(f"alias {alias!r} names chain {chain!r} already; nothing to change")
        return

    def change(document: ConfigDocument) -> str:
        check(document)
        return document.set_alias(alias, chain)

    def done(result: str) -> str:
        return f"{'pointed' if result == 'updated' else 'added'} alias {alias!r} -> chain {chain!r}"

    write_change(path, change, done, server)


@alias_app.command("list")
def alias_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The aliases and the chain each names."""
    aliases = _aliases(load_document(config_path(config)))
    if as_json:
        output.print_json([{"alias": a, "chain": c} for a, c in aliases.items()])
        return
    output.table(["ALIAS", "CHAIN"], [[a, c] for a, c in aliases.items()])


@alias_app.command("remove")
def alias_remove(
    alias: AliasArgument, config: ConfigOption = None, server: ServerOption = None
) -> None:
    """Remove an alias (and the comment above it): requests naming it get the default chain,
    or a 404 with settings.strictModels."""

    def change(document: ConfigDocument) -> None:
        if alias not in _aliases(document):
            known = ", ".join(_aliases(document)) or "none"
            raise fail(f"no alias {alias!r} (aliases: {known})")
        document.delete_alias(alias)

    write_change(config_path(config), change, f"removed alias {alias!r}", server)


def register(app: typer.Typer) -> None:
    """Add `alias ...` to the CLI."""
    app.add_typer(alias_app, name="alias")
