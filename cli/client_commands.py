"""`client add|list|show|set|remove|rotate`: the clients in the config file, and their keys.

A client is a person or an app with a key of its own (`clients:`,
docs/clients.md). Its key lives in the `.env` beside the config, as
`CHAIN429_CLIENT_<NAME>_KEY` (mode 600, every other line kept), and the
config holds only the reference `${CHAIN429_CLIENT_<NAME>_KEY}`, so the file
can live in git. `add` and `rotate` make the key here (48 characters,
`c429-` and 32 random bytes) and print it once, on stdout; nothing else
ever shows it: `list` and `show` print the reference.

Edits go through `config_commands.write_change` (the one write path), then a
running server is told to reload; a server also reloads by itself when the
config or its `.env` changes (within a second), so a rotated key is in force,
and the old one refused, even when the CLI cannot reach the server. A
variable set in the server's own environment wins over `.env`: `rotate` says
so when the shell it runs in has it.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import env_file, output
from .config_commands import config_path, items, load_document, notify_server, write_change
from .options import ConfigOption, JsonOption, ServerOption
from .output import fail, print_json, say

if TYPE_CHECKING:
    from chain429.config.writer import ConfigDocument

client_app = typer.Typer(
    help="Clients: callers with keys, chains and limits of their own (add, list, show, set, "
    "remove, rotate).",
    no_args_is_help=True,
)

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The client's name.")]
ChainsOption = Annotated[
    str | None,
    typer.Option(
        "--chains",
        help="The chains it may use, comma-separated (default: every chain).",
        show_default=False,
    ),
]


def _limit(flag: str, help: str) -> Any:
    return typer.Option(flag, min=0, help=help, show_default=False)


RpmOption = Annotated[
    int | None, _limit("--rpm", "Its requestsPerMinute (0 removes the limit, with `set`).")
]
TpmOption = Annotated[
    int | None, _limit("--tpm", "Its tokensPerMinute (0 removes the limit, with `set`).")
]
RpdOption = Annotated[
    int | None, _limit("--rpd", "Its requestsPerDay (0 removes the limit, with `set`).")
]
TpdOption = Annotated[
    int | None, _limit("--tpd", "Its tokensPerDay (0 removes the limit, with `set`).")
]
BudgetOption = Annotated[
    float | None,
    typer.Option(
        "--budget",
        min=0,
        help="Its paidBudgetUsdPerDay: US dollars of paid entries a day.",
        show_default=False,
    ),
]

KEY_PREFIX = "c429-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PLAIN_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def new_client_key() -> str:
    """48 characters: `c429-` (so a leaked one is recognised) and 32 random bytes."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _find(data: dict[str, Any], name: str) -> dict[str, Any]:
    for client in items(data, "clients"):
        if client.get("name") == name:
            return client
    from chain429.config.clients import no_such_client

    raise fail(no_such_client(name, [str(c.get("name")) for c in items(data, "clients")]))


def _chains(text: str | None, data: dict[str, Any]) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise fail("--chains needs at least one chain name")
    known = [str(c.get("name")) for c in items(data, "chains")]
    for name in names:
        if name not in known:
            raise fail(f"no chain named {name!r} (chains: {', '.join(known) or 'none'})")
    return names


def _limits(
    rpm: int | None, tpm: int | None, rpd: int | None, tpd: int | None, budget: float | None
) -> dict[str, Any]:
    """The limit fields given, as the file spells them; 0 means "remove" (None)."""
    given = {
        "requestsPerMinute": rpm,
        "tokensPerMinute": tpm,
        "requestsPerDay": rpd,
        "tokensPerDay": tpd,
    }
    out: dict[str, Any] = {k: (v or None) for k, v in given.items() if v is not None}
    if budget is not None:
        out["paidBudgetUsdPerDay"] = budget
    return out


def _variable_for(name: str, document_text: str) -> str:
    """`CHAIN429_CLIENT_<NAME>_KEY`, or with `_2`, `_3`... when the config already names
    it (`a-b` and `a_b` would share one)."""
    from chain429.config.clients import key_variable

    base = key_variable(name)
    taken = env_file.referenced_vars(document_text)
    variable, n = base, 1
    while variable in taken:
        n += 1
        variable = f"{base.removesuffix('_KEY')}_{n}_KEY"
    return variable


def _reference(client: dict[str, Any]) -> str | None:
    key = client.get("key")
    match = _PLAIN_REFERENCE.match(key) if isinstance(key, str) else None
    return match[1] if match else None


def _keep_in_dotenv(dotenv: Path, variable: str, key: str) -> None:
    try:
        env_file.upsert_dotenv(dotenv, variable, key)
    except OSError as err:
        raise fail(f"cannot write {dotenv}: {err.strerror or err}") from None


def _print_key(name: str, key: str, variable: str, dotenv: Path, as_json: bool) -> None:
    if as_json:
        print_json({"name": name, "key": key, "variable": variable, "dotenv": str(dotenv)})
    else:
        typer.echo(key)
    say(f"this is the only time the key is shown; it is in {dotenv} as {variable} (mode 600)")
    if os.environ.get(variable, key) != key:
        say(f"note: {variable} in your environment wins over {dotenv}; unset it")


@client_app.command("add")
def client_add(
    name: NameArgument,
    chains: ChainsOption = None,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    rpd: RpdOption = None,
    tpd: TpdOption = None,
    budget: BudgetOption = None,
    config: ConfigOption = None,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a client with a new key; the key is printed once (stdout) and kept in .env."""
    if not _NAME.match(name):
        raise fail(f"{name!r} is not a client name: letters, digits, `.`, `_`, `-` (up to 64)")
    path = config_path(config)
    document = load_document(path)
    data = document.raw()
    if name in {c.get("name") for c in items(data, "clients")}:
        raise fail(f"client {name!r} already exists in {path}; `chain429 client rotate {name}`")
    body: dict[str, Any] = {"name": name}
    allowed = _chains(chains, data)
    dotenv = path.parent / ".env"
    variable = _variable_for(name, document.text())
    body["key"] = f"${{{variable}}}"
    if allowed is not None:
        body["chains"] = allowed
    body.update({k: v for k, v in _limits(rpm, tpm, rpd, tpd, budget).items() if v is not None})
    key = new_client_key()
    # The key first: the config is validated with it set. A config that does not take
    # the client leaves no key behind.
    _keep_in_dotenv(dotenv, variable, key)

    def change(doc: ConfigDocument) -> str:
        if name in {c.get("name") for c in items(doc.raw(), "clients")}:
            raise fail(f"client {name!r} already exists in {path}")
        return doc.upsert_client(body)

    try:
        write_change(path, change, f"added client {name!r}", server)
    except typer.Exit:
        env_file.drop_dotenv(dotenv, variable)
        raise
    _print_key(name, key, variable, dotenv, as_json)


def _row(client: dict[str, Any]) -> list[str]:
    def limit(field: str) -> str:
        return output.cell(client.get(field))

    chains = client.get("chains")
    return [
        str(client.get("name")),
        ", ".join(chains) if isinstance(chains, list) else "all",
        limit("requestsPerMinute"),
        limit("tokensPerMinute"),
        limit("requestsPerDay"),
        limit("tokensPerDay"),
        limit("paidBudgetUsdPerDay"),
        str(client.get("key")),
    ]


_COLUMNS = ["NAME", "CHAINS", "RPM", "TPM", "RPD", "TPD", "BUDGET USD", "KEY"]


def _shown(client: dict[str, Any]) -> dict[str, Any]:
    """The client as the file has it, its key masked (a `${VAR}` shows as written)."""
    from chain429.config.masking import CLIENT_SECRETS, mask_fields

    shown: dict[str, Any] = mask_fields(client, CLIENT_SECRETS)
    return shown


@client_app.command("list")
def client_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The clients, their chains and limits; keys as their ${VAR} references, never values."""
    data = load_document(config_path(config)).raw()
    clients = [_shown(c) for c in items(data, "clients")]
    if as_json:
        print_json(clients)
        return
    output.table(_COLUMNS, [_row(c) for c in clients])


def _now(path: Path, server: str | None, name: str) -> tuple[dict[str, Any] | None, str]:
    """The client as the running server has it now (its `usage`, its `budget` today);
    or None and why not."""
    from .client import AdminClient, ClientError, resolve_target

    try:
        target = resolve_target(server, path)
        with AdminClient(target.base_url, target.admin_key, timeout=2) as client:
            _, body = client.request("GET", f"/v1/admin/clients/{name}")
    except ClientError as err:
        return None, err.message
    return (body if isinstance(body, dict) else {}), ""


@client_app.command("show")
def client_show(
    name: NameArgument,
    config: ConfigOption = None,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """One client: its chains, limits, key reference, and what is left of them now.

    What is left of its own limits and of its paid budget today is asked of the running
    server, when it answers.
    """
    from chain429.routing.budget import usd, usd_left

    path = config_path(config)
    client = _shown(_find(load_document(path).raw(), name))
    now, why = _now(path, server, name)
    usage = None if now is None else now.get("usage") or []
    budget = None if now is None else now.get("budget")
    if as_json:
        print_json({**client, "usage": usage, **({"budget": budget} if budget else {})})
        return
    output.table(_COLUMNS, [_row(client)], title=f"client {name}")
    if isinstance(budget, dict):
        typer.echo(
            f"paid budget today: {usd(float(budget.get('spent_usd') or 0))} spent, "
            f"{usd_left(float(budget.get('left_usd') or 0))} left of "
            f"{usd(float(budget.get('cap_usd') or 0))} "
            f"(resets {output.until_text(budget.get('resets_at'))})"
        )
    if usage is None:
        say(f"usage now: unknown ({why})")
    elif usage:
        output.table(
            ["LIMIT", "LIMIT VALUE", "REMAINING", "RESETS"],
            [
                [
                    f"{q.get('kind')}/{q.get('window')}",
                    output.cell(q.get("limit")),
                    output.cell(q.get("remaining")),
                    output.time_text(q.get("reset_at")) if q.get("reset_at") else "-",
                ]
                for q in usage
            ],
            title="usage now",
        )


@client_app.command("set")
def client_set(
    name: NameArgument,
    chains: ChainsOption = None,
    all_chains: Annotated[
        bool, typer.Option("--all-chains", help="Let it use every chain again.")
    ] = False,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    rpd: RpdOption = None,
    tpd: TpdOption = None,
    budget: BudgetOption = None,
    config: ConfigOption = None,
    server: ServerOption = None,
) -> None:
    """Change a client's chains or limits; the others, and its key, are kept."""
    if chains is not None and all_chains:
        raise fail("--chains and --all-chains say opposite things; give one")
    path = config_path(config)
    changes = _limits(rpm, tpm, rpd, tpd, budget)
    if all_chains:
        changes["chains"] = None
    elif chains is not None:
        changes["chains"] = _chains(chains, load_document(path).raw())
    if not changes:
        raise fail("nothing to change: give at least one option (see --help)")

    def change(document: ConfigDocument) -> str:
        current = _find(document.raw(), name)
        return document.upsert_client({**current, **changes})

    fields = ", ".join(sorted(changes))
    write_change(path, change, f"changed client {name!r} ({fields})", server)


@client_app.command("remove")
def client_remove(
    name: NameArgument, config: ConfigOption = None, server: ServerOption = None
) -> None:
    """Remove a client, and its key from .env."""
    path = config_path(config)
    variable = _reference(_find(load_document(path).raw(), name))

    def change(document: ConfigDocument) -> None:
        _find(document.raw(), name)
        document.delete_client(name)

    write_change(path, change, f"removed client {name!r}", server)
    dotenv = path.parent / ".env"
    still_used = variable is not None and variable in env_file.referenced_vars(path.read_text())
    if variable is not None and not still_used and env_file.drop_dotenv(dotenv, variable):
        say(f"removed {variable} from {dotenv}")


@client_app.command("rotate")
def client_rotate(
    name: NameArgument,
    config: ConfigOption = None,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give a client a new key: written to .env, printed once; the old key stops working
    when the server reloads (it does by itself within a second)."""
    path = config_path(config)
    client = _find(load_document(path).raw(), name)
    variable = _reference(client)
    if variable is None:
        raise fail(
            f"client {name!r} has no key of the form ${{VAR}} to rotate; "
            "write its key as ${VAR}, its value in .env"
        )
    dotenv = path.parent / ".env"
    key = new_client_key()
    _keep_in_dotenv(dotenv, variable, key)
    say(f"new key for client {name!r} in {dotenv}")
    say(notify_server(path, server))
    _print_key(name, key, variable, dotenv, as_json)


def register(app: typer.Typer) -> None:
    """Add `client ...` to the CLI."""
    app.add_typer(client_app, name="client")
