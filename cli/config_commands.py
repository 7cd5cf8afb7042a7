"""Commands that write the config file: init and provider ...; and what every
command that edits the file shares (chain ... and settings ... too).

Every change goes through `chain429.config.writer.apply_edit`, the admin API's
own writer: comments and `${VAR}` references are kept, the whole result is
validated, and the file is replaced atomically. Then `notify_server` asks a
running server to reload and says whether it took the change.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from chain429.upstream.presets import PRESETS, PROVIDER_TYPES

from . import env_file, output, starter, wizard
from .options import (
    ConfigOption,
    JsonOption,
    NewConfigOption,
    ServerOption,
    StreamOption,
)
from .output import fail, plural, say

if TYPE_CHECKING:
    from chain429.config.model import Config
    from chain429.config.writer import ConfigDocument, ConfigEditError

# The presets are here at import time: `--type`'s help lists them. The config model
# (pydantic) is imported inside the functions that read a file (see main.py on start-up).

T = TypeVar("T")


# --- shared helpers ------------------------------------------------------------
def config_path(config: Path | None) -> Path:
    from chain429.config.loader import find_config_path

    path = find_config_path(str(config) if config else None)
    if not path.is_file():
        raise fail(f"no config file at {path}: run `chain429 init`, or pass --config")
    return path


def load_document(path: Path) -> ConfigDocument:
    from chain429.config.writer import ConfigDocument, ConfigEditError

    try:
        return ConfigDocument.load(path)
    except ConfigEditError as err:
        raise fail(edit_message(err)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise fail(f"cannot read {path}: {err}") from None


def edit_message(err: ConfigEditError) -> str:
    detail = "; ".join(str(issue) for issue in err.issues)
    return f"{err.message}: {detail}" if detail else err.message


def known_env(path: Path) -> dict[str, str]:
    """What `${VAR}` resolves to for this file: .env beside it, then the environment."""
    from chain429.config.loader import read_dotenv

    return {**read_dotenv(path.parent / ".env"), **os.environ}


def strict_config(path: Path) -> Config:
    """The file with every variable set, as `chain429 serve` needs it; else exit 2."""
    from chain429.config.errors import ConfigError
    from chain429.config.loader import load_config

    try:
        return load_config(path)
    except ConfigError as err:
        more = f" (and {len(err.issues) - 1} more; see `chain429 validate`)"
        raise fail(f"{err.issues[0]}{more if len(err.issues) > 1 else ''}") from None


def write_change(
    path: Path,
    change: Callable[[ConfigDocument], T],
    done: str | Callable[[T], str],
    server: str | None,
) -> T:
    """Apply `change` through the one write path, say what happened (`done`, or what it
    makes of the change's result), tell the server."""
    from chain429.config.writer import ConfigEditError, apply_edit

    known = known_env(path)
    environ, unset = dict(os.environ), set()

    def edit(document: ConfigDocument) -> T:
        result = change(document)
        unset.update(env_file.referenced_vars(document.text()) - known.keys())
        environ.update({var: env_file.unset_value(var) for var in unset})
        return result

    try:
        _, result = apply_edit(path, edit, environ=environ)
    except ConfigEditError as err:
        raise fail(edit_message(err)) from None
    except OSError as err:
        raise fail(f"cannot write {path}: {err.strerror or err}") from None
    say(f"{done if isinstance(done, str) else done(result)} in {path}")
    if unset:
        say(f"note: {', '.join(sorted(unset))} not set (environment or .env); the server needs it")
    say(notify_server(path, server))
    return result


def notify_server(config_path: Path, server: str | None = None) -> str:
    """Ask the server running this config to reload; one sentence on what happened.

    Which server and key: `chain429.cli.client.resolve_target` (--server,
    $CHAIN429_SERVER, the current context, else host:port of the file).
    """
    from .client import AdminClient, ClientError, resolve_target

    try:
        target = resolve_target(server, config_path)
        with AdminClient(target.base_url, target.admin_key, timeout=2) as client:
            url = client.base_url
            if target.source == str(config_path):  # found from the file: is it this file's?
                _, status = client.request("GET", "/v1/admin/status", accept=(200, 401, 403))
                served = status.get("config_path") if isinstance(status, dict) else None
                if served and not _same_file(served, config_path):
                    return f"the server at {url} serves {served}, not this file; not reloaded"
            code, body = client.request("POST", "/v1/admin/reload", accept=(200, 422))
    except ClientError as err:
        return f"{err.message}; the file is written all the same"
    generation = body.get("generation") if isinstance(body, dict) else None
    if code == 200:
        return f"the server at {url} took the change (generation {generation})"
    errors = body.get("errors") if isinstance(body, dict) else None
    why = errors[0].get("message") if errors and isinstance(errors[0], dict) else "invalid"
    return f"the server at {url} did not take the change ({why}); it keeps generation {generation}"


def _same_file(a: str, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def items(data: dict[str, Any], section: str) -> list[dict[str, Any]]:
    return [item for item in data.get(section) or [] if isinstance(item, dict)]


def find_chain(data: dict[str, Any], name: str) -> dict[str, Any]:
    for chain in items(data, "chains"):
        if chain.get("name") == name:
            return chain
    names = ", ".join(str(c.get("name")) for c in items(data, "chains")) or "none"
    raise fail(f"no chain named {name!r} (chains: {names})")


def chains_using(data: dict[str, Any], provider_id: str) -> list[str]:
    return [
        str(chain.get("name"))
        for chain in items(data, "chains")
        if any(e.get("provider") == provider_id for e in items(chain, "entries"))
    ]


# --- init ------------------------------------------------------------------------
def init(
    config: NewConfigOption = None,
    yes: Annotated[
        bool,
        typer.Option("--yes", "-y", help="Ask nothing: use the flags and the environment."),
    ] = False,
    provider: Annotated[
        list[str] | None,
        typer.Option(
            "--provider",
            "-p",
            help=f"Provider to set up (repeatable): {', '.join(wizard.BY_TYPE)}. "
            "Default: those whose API keys are in the environment.",
            show_default=False,
        ),
    ] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 3429,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    failover: Annotated[
        wizard.Failover,
        typer.Option(
            "--failover",
            help="With --yes: `waterfall` (entries are equals: a failure moves on at once) or "
            "`preferred` (the order is a preference: settings.retry retries a blip once and "
            "waits out 429s of up to 3 s).",
        ),
    ] = wizard.Failover.WATERFALL,
) -> None:
    """Write a starter chain429.yaml with free-tier chains, and a proxy key and an admin key
    in .env (keys already there are kept)."""
    path = config or Path("chain429.yaml")
    if path.is_dir():
        raise fail(f"{path} is a directory; pass the file to write, e.g. {path}/chain429.yaml")
    if path.exists() and not force:
        raise fail(f"{path} exists; pass --force to overwrite it")
    try:
        types = [wizard.known_type(name) for name in provider or ()]
    except ValueError as err:
        raise fail(str(err)) from None
    from chain429.config.loader import read_dotenv

    dotenv = path.parent / ".env"
    environ = {**read_dotenv(dotenv), **os.environ}
    found = wizard.detect_keys(environ)
    if not yes:
        if not wizard.can_prompt():
            raise fail(
                "init asks questions and there is no terminal: pass --yes, with "
                "--provider TYPE (repeatable; default: those whose keys are set), --port N"
            )
        with wizard.prompting():
            plan = wizard.ask_init(found, port, types)
    else:
        types = types or list(found)
        if not types:
            names = ", ".join(var for known in wizard.KNOWN for var in known.env)
            raise fail(f"no provider key in the environment ({names}); set one or pass --provider")
        plan = wizard.plan(types, environ, port=port, failover=failover)
    try:
        written = starter.write(path, plan, environ)
    except OSError as err:
        raise fail(f"cannot write {err.filename or path}: {err.strerror or err}") from None
    say(f"wrote {path} (providers: {', '.join(plan.providers)}; chains: {', '.join(plan.chains)})")
    starter.report_keys(written)
    missing = [var for var in plan.providers.values() if not environ.get(var)]
    if missing:
        say(f"before `chain429 serve`, set {', '.join(missing)} (environment or {dotenv})")
    else:
        flag = "" if config is None else f" -c {path}"
        say(f"start it with: chain429 serve{flag}")
    proxy = written.keys[wizard.PROXY_KEY_VAR]
    say(
        "your proxy API key, on stdout (clients send it as their API key; "
        f"it is in {dotenv} as {proxy.var}):"
    )
    sys.stdout.write(proxy.value + "\n")
    sys.stdout.flush()


# --- provider ----------------------------------------------------------------------
provider_app = typer.Typer(
    help="Providers in the config file: add, list, show, set, remove, test.",
    no_args_is_help=True,
)
# What `provider add` and `provider set` (edit_commands) both take.
IdArgument = Annotated[str, typer.Argument(metavar="ID", help="The provider's id.")]
TypeOption = Annotated[
    str | None,
    typer.Option("--type", "-t", help=f"One of: {', '.join(PROVIDER_TYPES)}.", show_default=False),
]
NameOption = Annotated[str | None, typer.Option("--name", help="Display name.", show_default=False)]
BaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="API base URL (…/v1); required for "
        + ", ".join(t for t in PROVIDER_TYPES if PRESETS[t].default_base_url is None)
        + ".",
        show_default=False,
    ),
]
ApiKeyEnvOption = Annotated[
    str | None,
    typer.Option(
        "--api-key-env",
        help="Variable holding the key, written as apiKey: ${VAR}.",
        show_default=False,
    ),
]


@provider_app.command("add")
def provider_add(
    provider_id: IdArgument,
    ptype: TypeOption = None,
    name: NameOption = None,
    base_url: BaseUrlOption = None,
    api_key_env: ApiKeyEnvOption = None,
    no_key: Annotated[
        bool,
        typer.Option(
            "--no-key",
            help="It takes no key (a local server: vLLM, llama.cpp); no apiKey is written. "
            "The ollama and lmstudio types take none by default.",
        ),
    ] = False,
    paid: Annotated[
        bool,
        typer.Option("--paid", help="Mark it paid: a last resort (see settings.waitBeforePaidMs)."),
    ] = False,
    config: ConfigOption = None,
    server: ServerOption = None,
) -> None:
    """Add a provider (asks for what the flags leave out, on a terminal). With no config
    file yet, first writes one as `init --yes` would.

    The key's variable is the type's unless --api-key-env names one (GROQ_API_KEY for
    groq).
    """
    if no_key and api_key_env is not None:
        raise fail("--no-key and --api-key-env contradict each other; give one")
    if ptype is not None and ptype not in PRESETS:
        raise fail(f"unknown type {ptype!r}; types: {', '.join(PROVIDER_TYPES)}")
    from chain429.config.loader import find_config_path

    path = find_config_path(str(config) if config else None)
    exists = path.is_file()
    if exists and provider_id in {
        p.get("id") for p in items(load_document(path).raw(), "providers")
    }:
        raise fail(f"provider {provider_id!r} already exists in {path}")
    if ptype is None or (PRESETS[ptype].default_base_url is None and base_url is None):
        if not wizard.can_prompt():
            raise fail(
                "provider add needs --type TYPE (and --base-url URL for generic-openai); "
                "there is no terminal to ask on"
            )
        with wizard.prompting():
            answers = wizard.ask_provider(provider_id, ptype, name, base_url, api_key_env, no_key)
    else:
        var = api_key_env
        if var is None and not no_key and PRESETS[ptype].needs_key:
            var = wizard.key_var(ptype, provider_id, known_env(path))
        answers = wizard.ProviderAnswers(ptype, name, base_url, var)
    if answers.api_key_env is not None and not wizard.VAR_NAME.fullmatch(answers.api_key_env):
        raise fail(f"--api-key-env {answers.api_key_env!r} is not a variable name")
    if not exists:
        path = _starter_path(config)
        try:
            starter.create_quietly(path)
        except OSError as err:
            raise fail(f"cannot write {err.filename or path}: {err.strerror or err}") from None
    entry = {
        "id": provider_id,
        "name": answers.name,
        "type": answers.type,
        "baseUrl": answers.base_url,
        "apiKey": None if answers.api_key_env is None else f"${{{answers.api_key_env}}}",
        "paid": True if paid else None,
    }

    def change(document: ConfigDocument) -> str:
        if provider_id in {p.get("id") for p in items(document.raw(), "providers")}:
            raise fail(f"provider {provider_id!r} already exists in {path}")
        return document.upsert_provider(entry)

    keyless = "" if answers.api_key_env else ", no key"
    write_change(path, change, f"added provider {provider_id!r} ({answers.type}{keyless})", server)


def _starter_path(config: Path | None) -> Path:
    """Where a new config goes: as named (--config, $CHAIN429_CONFIG, $CONFIG_PATH), else
    ./chain429.yaml as `init` writes it (not the user config dir, the last place looked)."""
    from chain429.config.loader import find_config_path

    named = config or os.environ.get("CHAIN429_CONFIG") or os.environ.get("CONFIG_PATH")
    return find_config_path(str(named)) if named else Path("chain429.yaml")


@provider_app.command("list")
def provider_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The providers, secrets masked."""
    document = load_document(config_path(config))
    providers, raw = items(document.masked(), "providers"), document.raw()
    if as_json:
        output.print_json(providers)
        return
    rows = []
    for p in providers:
        preset = PRESETS.get(str(p.get("type")))
        url = p.get("baseUrl") or (preset.default_base_url if preset else None)
        paid = "yes" if p.get("paid") else ""
        users = ", ".join(chains_using(raw, str(p.get("id"))))
        rows.append([p.get("id"), p.get("type"), p.get("name"), url, p.get("apiKey"), paid, users])
    output.table(["ID", "TYPE", "NAME", "BASE URL", "API KEY", "PAID", "CHAINS"], rows)


@provider_app.command("show")
def provider_show(
    provider_id: IdArgument, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """One provider's fields (secrets masked) and the chains that use it."""
    document = load_document(config_path(config))
    found = [p for p in items(document.masked(), "providers") if p.get("id") == provider_id]
    if not found:
        raise fail(f"no provider with id {provider_id!r}")
    users = chains_using(document.raw(), provider_id)
    if as_json:
        output.print_json({"provider": found[0], "usedBy": users})
        return
    rows = [[k, v if isinstance(v, str) else json.dumps(v)] for k, v in found[0].items()]
    output.table(["FIELD", "VALUE"], [*rows, ["usedBy", ", ".join(users)]])


@provider_app.command("remove")
def provider_remove(
    provider_id: IdArgument,
    cascade: Annotated[
        bool,
        typer.Option(
            "--cascade",
            help="Remove its chain entries too, and the chains that leaves empty (never the "
            "default chain).",
        ),
    ] = False,
    config: ConfigOption = None,
    server: ServerOption = None,
) -> None:
    """Remove a provider (refused while a chain uses it, unless --cascade)."""
    path = config_path(config)
    data = load_document(path).raw()
    chains = chains_using(data, provider_id)
    if chains and not cascade:
        raise fail(
            f"provider {provider_id!r} is used by chains: {', '.join(chains)}; "
            "pass --cascade to remove its entries too"
        )
    entries = sum(
        e.get("provider") == provider_id for c in items(data, "chains") for e in items(c, "entries")
    )

    def change(document: ConfigDocument) -> list[str]:
        return document.delete_provider(provider_id, cascade=cascade)

    def done(emptied: list[str]) -> str:
        text = f"removed provider {provider_id!r}"
        if entries:
            text += f" and its {plural(entries, 'chain entry', 'chain entries')}"
        if emptied:
            names = ", ".join(emptied)
            text += f"; left empty, so removed too: {plural(len(emptied), 'chain')} ({names})"
        return text

    write_change(path, change, done, server)


@provider_app.command("test")
def provider_test(
    provider_id: IdArgument,
    model: Annotated[
        str | None, typer.Option(help="Test this model (default: its chain entries).")
    ] = None,
    stream: StreamOption = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send one tiny request to each chain entry on this provider; exit 1 if none works."""
    from chain429.config.model import Chain, ChainEntry

    loaded = strict_config(config_path(config))
    if provider_id not in {p.id for p in loaded.providers}:
        raise fail(f"no provider with id {provider_id!r}")
    if model is not None:
        entries = [ChainEntry(provider=provider_id, model=model)]
    else:
        seen: dict[str, ChainEntry] = {}
        for chain in loaded.chains:
            for e in chain.entries:
                if e.provider == provider_id:
                    seen.setdefault(e.model, e)
        entries = list(seen.values())
    if not entries:
        raise fail(f"provider {provider_id!r} is in no chain; pass --model MODEL")
    test_chain = Chain(name=f"provider:{provider_id}", entries=tuple(entries))
    probed = loaded.model_copy(update={"chains": (test_chain,)})
    wizard.run_probe(probed, test_chain.name, stream, as_json)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command()(init)
    app.add_typer(provider_app, name="provider")
