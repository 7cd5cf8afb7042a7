"""`chain429 chain set` and `chain429 provider set`: the edits of the web UI, in the CLI.

Everything the web UI changes has a command (docs/ui.md lists them); these
are the ones `chain add|remove|move|entry|default` and `provider add|remove`
do not cover: giving a chain a whole new list of entries at once, and
changing an existing provider. They write the file
through the same writer as the other commands (comments and `${VAR}`
references kept) and tell a running server to reload.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from chain429.upstream.presets import PROVIDER_TYPES

from . import wizard
from .chain_commands import EntriesOption, KindOption, NameArgument, chain_app, chain_kind
from .config_commands import (
    ApiKeyEnvOption,
    BaseUrlOption,
    IdArgument,
    NameOption,
    TypeOption,
    config_path,
    find_chain,
    items,
    provider_app,
    write_change,
)
from .options import ConfigOption, ServerOption
from .output import fail

if TYPE_CHECKING:
    from chain429.config.writer import ConfigDocument


def chain_set(
    name: NameArgument,
    entry: EntriesOption = None,
    kind: KindOption = None,
    config: ConfigOption = None,
    server: ServerOption = None,
) -> None:
    """Give an existing chain a new list of entries (to add, remove or reorder them at once),
    or another kind.

    The --entry options are the chain's whole new list; entries that stay keep their own
    settings (rateLimits, paid). --kind alone keeps the entries.
    """
    kind = chain_kind(kind)
    if not entry and kind is None:
        raise fail("nothing to change: give --entry PROVIDER:MODEL (repeatable) or --kind")
    try:
        wanted = [wizard.parse_entry(text) for text in entry or ()]
    except ValueError as err:
        raise fail(str(err)) from None

    def change(document: ConfigDocument) -> None:
        chain = dict(find_chain(document.raw(), name))
        if wanted:
            known = {(e.get("provider"), e.get("model")): e for e in items(chain, "entries")}
            chain["entries"] = [
                known.get(pair) or {"provider": pair[0], "model": pair[1]} for pair in wanted
            ]
        if kind is not None:
            chain["kind"] = None if kind == "chat" else kind  # None: the key goes (chat)
        document.upsert_chain(chain)

    done = [f"{len(wanted)} entries"] if wanted else []
    done += [f"kind {kind}"] if kind is not None else []
    write_change(config_path(config), change, f"set chain {name!r} to {', '.join(done)}", server)


def provider_set(
    provider_id: IdArgument,
    ptype: TypeOption = None,
    name: NameOption = None,
    base_url: BaseUrlOption = None,
    api_key_env: ApiKeyEnvOption = None,
    timeout: Annotated[
        int | None, typer.Option(min=1, help="Request timeout in ms.", show_default=False)
    ] = None,
    paid: Annotated[
        bool | None,
        typer.Option(
            "--paid/--free", help="Mark it paid (a last resort) or free.", show_default=False
        ),
    ] = None,
    config: ConfigOption = None,
    server: ServerOption = None,
) -> None:
    """Change some fields of an existing provider; the others, and its key, are kept.

    Changing its type or base URL needs --api-key-env again: a key goes only where its
    owner sent it.
    """
    changes: dict[str, Any] = {
        "type": ptype,
        "name": name,
        "baseUrl": base_url,
        "timeout": timeout,
        "paid": paid,
    }
    changes = {key: value for key, value in changes.items() if value is not None}
    if api_key_env is not None:
        if not wizard.VAR_NAME.fullmatch(api_key_env):
            raise fail(f"--api-key-env {api_key_env!r} is not a variable name")
        changes["apiKey"] = f"${{{api_key_env}}}"
    if not changes:
        raise fail("nothing to change: give at least one option (see --help)")
    if ptype is not None and ptype not in PROVIDER_TYPES:
        raise fail(f"unknown type {ptype!r}; types: {', '.join(PROVIDER_TYPES)}")

    def change(document: ConfigDocument) -> None:
        found = [p for p in items(document.raw(), "providers") if p.get("id") == provider_id]
        if not found:
            raise fail(f"no provider with id {provider_id!r}")
        # The stored key goes along only while the type and URL stay (the writer checks).
        kept = {key: value for key, value in found[0].items() if key != "apiKey"}
        document.upsert_provider({**kept, **changes})

    fields = ", ".join(sorted(changes))
    write_change(
        config_path(config), change, f"changed provider {provider_id!r} ({fields})", server
    )


def register(app: typer.Typer) -> None:
    """Add these commands to `chain429 chain` and `chain429 provider`."""
    chain_app.command("set")(chain_set)
    provider_app.command("set")(provider_set)
