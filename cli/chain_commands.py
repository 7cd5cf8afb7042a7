"""`chain ...`: the chains in the config file, and their entries one by one.

Edits go through `config_commands.write_change` (the one write path, then a
reload of a running server). Entries are named as `PROVIDER:MODEL` and
numbered from 1 in the order they are tried, as `chain show` lists them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import output, wizard
from .config_commands import (
    config_path,
    find_chain,
    items,
    load_document,
    strict_config,
    write_change,
)
from .options import ConfigOption, JsonOption, ServerOption, StreamOption
from .output import fail, plural, say

if TYPE_CHECKING:
    from chain429.config.writer import ConfigDocument

chain_app = typer.Typer(
    help="Chains in the config file: add, list, show, remove, move, set, test, "
    "entry add|remove, default.",
    no_args_is_help=True,
)
entry_app = typer.Typer(help="One entry of a chain: add or remove it.", no_args_is_help=True)
chain_app.add_typer(entry_app, name="entry")

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The chain's name.")]
# What `chain add` and `chain set` (edit_commands) both take.
EntriesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--entry",
        "-e",
        help="PROVIDER:MODEL, repeatable, in the order to try them (split at the first colon: "
        "groq:llama-3.1-8b-instant, openrouter:meta-llama/x:free).",
        show_default=False,
    ),
]
# What `chain add` and `chain set` both take; `chat` is what a chain without `kind` is.
KindOption = Annotated[
    str | None,
    typer.Option(
        "--kind",
        help="What the chain serves: chat (/v1/chat/completions and /v1/completions) or "
        "embeddings (/v1/embeddings). Default for a new chain: chat.",
        show_default=False,
    ),
]
EntryArgument = Annotated[
    str,
    typer.Argument(
        metavar="PROVIDER:MODEL",
        help="The entry, split at the first colon (openrouter:meta-llama/x:free).",
    ),
]


def _entry(text: str) -> tuple[str, str]:
    try:
        return wizard.parse_entry(text)
    except ValueError as err:
        raise fail(str(err)) from None


def _pairs(chain: dict[str, Any]) -> list[tuple[Any, Any]]:
    return [(e.get("provider"), e.get("model")) for e in items(chain, "entries")]


def _listed(pairs: list[tuple[Any, Any]]) -> str:
    return ", ".join(f"{p}:{m}" for p, m in pairs) or "none"


def chain_kind(kind: str | None) -> str | None:
    """A --kind value, checked (chat, embeddings); None when not given."""
    from chain429.config.model import CHAIN_KINDS

    if kind is not None and kind not in CHAIN_KINDS:
        raise fail(f"--kind {kind!r} is not a chain kind; kinds: {', '.join(CHAIN_KINDS)}")
    return kind


def kind_of(chain: dict[str, Any]) -> str:
    """A chain's kind as the file says it (no `kind`: chat, as 429chain's chains are)."""
    return str(chain.get("kind") or "chat")


@chain_app.command("add")
def chain_add(
    name: NameArgument,
    entry: EntriesOption = None,
    kind: KindOption = None,
    config: ConfigOption = None,
    server: ServerOption = None,
) -> None:
    """Add a chain: entries from --entry, or picked and ordered on a terminal (for
    --kind embeddings, the embedding models your providers' types are known to serve
    are offered)."""
    path = config_path(config)
    data = load_document(path).raw()
    kind = chain_kind(kind) or "chat"

    def exists() -> typer.Exit:
        return fail(
            f"chain {name!r} already exists in {path}; change it with "
            f"`chain429 chain entry add|remove {name} PROVIDER:MODEL` or "
            f"`chain429 chain move {name} PROVIDER:MODEL --to N`"
        )

    if name in {c.get("name") for c in items(data, "chains")}:
        raise exists()
    providers = {str(p.get("id")): str(p.get("type")) for p in items(data, "providers")}
    if entry:
        entries = [_entry(text) for text in entry]
    else:
        if not wizard.can_prompt():
            hint = ""
            known = wizard.embedding_models(providers) if kind == "embeddings" else []
            if known:
                hint = f"; embedding models your providers serve: {', '.join(known)}"
            raise fail(
                f"chain add needs --entry PROVIDER:MODEL (repeatable, in order); no terminal{hint}"
            )
        if not providers:
            raise fail("the config has no providers; add one with `chain429 provider add`")
        with wizard.prompting():
            entries = wizard.ask_entries(providers, kind)
    body: dict[str, Any] = {"name": name}
    if kind != "chat":  # a chat chain is written as 429chain wrote it: without a kind
        body["kind"] = kind
    body["entries"] = [{"provider": p, "model": m} for p, m in entries]

    def change(document: ConfigDocument) -> str:
        if name in {c.get("name") for c in items(document.raw(), "chains")}:
            raise exists()
        return document.upsert_chain(body)

    what = "" if kind == "chat" else f"{kind} "
    added = f"added {what}chain {name!r} ({plural(len(entries), 'entry', 'entries')})"
    write_change(path, change, added, server)


@chain_app.command("list")
def chain_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The chains, the default marked."""
    data = load_document(config_path(config)).raw()
    default = (data.get("settings") or {}).get("defaultChain")
    chains = [
        {
            "name": c.get("name"),
            "kind": kind_of(c),
            "default": c.get("name") == default,
            "entries": c.get("entries"),
        }
        for c in items(data, "chains")
    ]
    if as_json:
        output.print_json(chains)
        return
    rows = []
    for chain in chains:
        entries = items(chain, "entries")
        providers = list(dict.fromkeys(str(e.get("provider")) for e in entries))
        default = "yes" if chain["default"] else ""
        rows.append([chain["name"], chain["kind"], len(entries), default, ", ".join(providers)])
    output.table(["NAME", "KIND", "ENTRIES", "DEFAULT", "PROVIDERS"], rows)


@chain_app.command("show")
def chain_show(
    name: NameArgument, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """A chain's entries, numbered from 1 in the order they are tried."""
    data = load_document(config_path(config)).raw()
    chain = find_chain(data, name)
    paid = {p.get("id"): bool(p.get("paid")) for p in items(data, "providers")}
    entries = [
        {
            "position": i,
            **e,
            "paid": paid.get(e.get("provider"), False)
            if e.get("paid") is None
            else bool(e["paid"]),
        }
        for i, e in enumerate(items(chain, "entries"), 1)
    ]
    if as_json:
        default = (data.get("settings") or {}).get("defaultChain") == name
        body = {"name": name, "kind": kind_of(chain), "default": default, "entries": entries}
        output.print_json(body)
        return
    rows = [
        [e["position"], e.get("provider"), e.get("model"), "yes" if e["paid"] else ""]
        for e in entries
    ]
    title = f"chain {name}" + ("" if kind_of(chain) == "chat" else f" ({kind_of(chain)})")
    output.table(["#", "PROVIDER", "MODEL", "PAID"], rows, title=title)


@chain_app.command("remove")
def chain_remove(
    name: NameArgument, config: ConfigOption = None, server: ServerOption = None
) -> None:
    """Remove a chain (refused while it is settings.defaultChain)."""

    def change(document: ConfigDocument) -> None:
        document.delete_chain(name)

    write_change(config_path(config), change, f"removed chain {name!r}", server)


@chain_app.command("move")
def chain_move(
    name: NameArgument,
    entry: Annotated[str, typer.Argument(metavar="PROVIDER:MODEL", help="The entry to move.")],
    to: Annotated[
        int, typer.Option("--to", min=1, help="New position, from 1 as `chain show` lists.")
    ],
    config: ConfigOption = None,
    server: ServerOption = None,
) -> None:
    """Move an entry of a chain to position N (a comment above it moves along)."""
    provider, model = _entry(entry)
    path = config_path(config)

    def where(document: ConfigDocument) -> int | None:
        """The entry's index (from 0), or None if it is at `to` already."""
        pairs = _pairs(find_chain(document.raw(), name))
        if (provider, model) not in pairs:
            raise fail(f"chain {name!r} has no entry {entry} (it has: {_listed(pairs)})")
        if to > len(pairs):
            raise fail(
                f"--to {to} is past the end: chain {name!r} has "
                f"{plural(len(pairs), 'entry', 'entries')}"
            )
        index = pairs.index((provider, model))
        return None if index == to - 1 else index

    if where(load_document(path)) is None:
        say(f"{entry} is already at position {to} of chain {name!r}; nothing to change")
        return

    def change(document: ConfigDocument) -> None:
        index = where(document)
        if index is not None:
            document.move_entry(name, index, to - 1)

    write_change(path, change, f"moved {entry} to position {to} of chain {name!r}", server)


@chain_app.command("test")
def chain_test(
    name: NameArgument,
    stream: StreamOption = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send one tiny request to every entry (no server needed); exit 1 if none works."""
    loaded = strict_config(config_path(config))
    if loaded.chain(name) is None:
        raise fail(f"no chain named {name!r} (chains: {', '.join(c.name for c in loaded.chains)})")
    wizard.run_probe(loaded, name, stream, as_json)


@chain_app.command("default")
def chain_default(
    name: NameArgument, config: ConfigOption = None, server: ServerOption = None
) -> None:
    """Make NAME the default chain (settings.defaultChain): the one for requests that name
    no chain."""
    path = config_path(config)
    data = load_document(path).raw()
    find_chain(data, name)
    if (data.get("settings") or {}).get("defaultChain") == name:
        say(f"chain {name!r} is the default already; nothing to change")
        return

    def change(document: ConfigDocument) -> None:
        find_chain(document.raw(), name)
        document.patch_settings({"defaultChain": name})

    write_change(path, change, f"made chain {name!r} the default", server)


@entry_app.command("add")
def entry_add(
    name: NameArgument,
    entry: EntryArgument,
    at: Annotated[
        int | None,
        typer.Option(
            "--at",
            min=1,
            help="Position, from 1 as `chain show` lists (default: last).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
    server: ServerOption = None,
) -> None:
    """Add an entry to a chain, last or at position N."""
    provider, model = _entry(entry)
    path = config_path(config)

    def position(document: ConfigDocument) -> int:
        data = document.raw()
        pairs = _pairs(find_chain(data, name))
        if (provider, model) in pairs:
            where = pairs.index((provider, model)) + 1
            raise fail(
                f"chain {name!r} has {entry} already, at position {where}; "
                f"move it with `chain429 chain move {name} {entry} --to N`"
            )
        ids = [str(p.get("id")) for p in items(data, "providers")]
        if provider not in ids:
            raise fail(
                f"no provider with id {provider!r} (providers: {', '.join(ids) or 'none'}); "
                "add it with `chain429 provider add`"
            )
        if at is not None and at > len(pairs) + 1:
            raise fail(
                f"--at {at} is past the end: chain {name!r} takes positions 1 to {len(pairs) + 1}"
            )
        return len(pairs) + 1 if at is None else at

    where = position(load_document(path))

    def change(document: ConfigDocument) -> None:
        document.add_entry(name, {"provider": provider, "model": model}, position(document) - 1)

    write_change(path, change, f"added {entry} to chain {name!r} at position {where}", server)


@entry_app.command("remove")
def entry_remove(
    name: NameArgument,
    entry: EntryArgument,
    at: Annotated[
        int | None,
        typer.Option(
            "--at",
            min=1,
            help="Its position, from 1 as `chain show` lists: which one, when the chain has "
            "it twice.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
    server: ServerOption = None,
) -> None:
    """Remove an entry from a chain (and the comment above it)."""
    provider, model = _entry(entry)
    path = config_path(config)

    def index(document: ConfigDocument) -> int:
        pairs = _pairs(find_chain(document.raw(), name))
        found = [i for i, pair in enumerate(pairs) if pair == (provider, model)]
        if at is not None:
            found = [i for i in found if i == at - 1]
            if not found:
                raise fail(
                    f"entry {at} of chain {name!r} is not {entry} (it has: {_listed(pairs)})"
                )
        if not found:
            raise fail(f"chain {name!r} has no entry {entry} (it has: {_listed(pairs)})")
        if len(found) > 1:
            places = ", ".join(str(i + 1) for i in found)
            raise fail(f"{entry} is at positions {places} of chain {name!r}; say which with --at N")
        if len(pairs) == 1:
            raise fail(
                f"{entry} is the only entry of chain {name!r}, and a chain needs one; "
                f"remove the chain with `chain429 chain remove {name}`"
            )
        return found[0]

    where = index(load_document(path))

    def change(document: ConfigDocument) -> None:
        document.delete_entry(name, index(document))

    write_change(
        path, change, f"removed {entry} (position {where + 1}) from chain {name!r}", server
    )


def register(app: typer.Typer) -> None:
    """Add `chain ...` to the CLI."""
    app.add_typer(chain_app, name="chain")
