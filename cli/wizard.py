"""What `init`, `chain add` and `provider add` know and ask (the free-tier catalogue,
the generated config text, the `.env` writer, the questionary prompts), and how
`chain test` / `provider test` probe entries and show them in a live table.

The pure parts (catalogue, rendering, `.env`, entry parsing) are tested on
their own; the prompts use whatever prompt_toolkit app session is current, so a
test drives them through a pipe input and the CLI sends them to stderr.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer

from chain429.upstream.presets import PRESETS, PROVIDER_TYPES

from . import output
from .options import ADMIN_KEY_ENV
from .output import fail, say

if TYPE_CHECKING:
    from chain429.config.model import Config

VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PROXY_KEY_VAR = "CHAIN429_API_KEY"  # what clients send
ADMIN_KEY_VAR = ADMIN_KEY_ENV  # what the CLI sends to change a running server


@dataclass(frozen=True)
class Known:
    """A provider `init` can set up: its type, name, key variables and chain models."""

    type: str
    name: str
    env: tuple[str, ...]  # key variables, the preferred one first
    fast: str  # a small, fast model
    smart: str  # a larger model
    paid: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)


# In the order they appear in a generated file; the paid provider last.
KNOWN: tuple[Known, ...] = (
    Known(
        "openrouter",
        "OpenRouter",
        ("OPENROUTER_API_KEY",),
        "meta-llama/llama-3.2-3b-instruct:free",
        "meta-llama/llama-3.3-70b-instruct:free",
        headers={"HTTP-Referer": "https://github.com/chain429/chain429", "X-Title": "chain429"},
    ),
    Known("groq", "Groq", ("GROQ_API_KEY",), "llama-3.1-8b-instant", "llama-3.3-70b-versatile"),
    Known("cerebras", "Cerebras", ("CEREBRAS_API_KEY",), "llama3.1-8b", "llama-3.3-70b"),
    Known(
        "google-ai",
        "Google AI Studio",
        ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        "gemini-2.0-flash-lite",
        "gemini-2.0-flash",
    ),
    Known(
        "mistral", "Mistral", ("MISTRAL_API_KEY",), "ministral-8b-latest", "mistral-small-latest"
    ),
    Known("openai", "OpenAI", ("OPENAI_API_KEY",), "gpt-4o-mini", "gpt-4o-mini", paid=True),
)
BY_TYPE = {known.type: known for known in KNOWN}
ALIASES = {"gemini": "google-ai", "google": "google-ai"}

# Which provider is tried first in each chain; the paid one always last.
CHAINS: dict[str, tuple[str, tuple[str, ...]]] = {
    "fast": (
        "Small, fast models.",
        ("groq", "cerebras", "google-ai", "mistral", "openrouter", "openai"),
    ),
    "smart": (
        "Larger models for harder questions.",
        ("openrouter", "groq", "cerebras", "google-ai", "mistral", "openai"),
    ),
}


def known_type(name: str) -> str:
    """A catalogue type from a --provider value (`gemini` is google-ai); ValueError if unknown."""
    found = ALIASES.get(name.lower(), name.lower())
    if found not in BY_TYPE:
        raise ValueError(f"unknown provider {name!r}; known: {', '.join(BY_TYPE)}")
    return found


def detect_keys(environ: Mapping[str, str]) -> dict[str, str]:
    """Catalogue type -> the variable that holds its key, for every key that is set."""
    found = {}
    for known in KNOWN:
        var = next((v for v in known.env if environ.get(v)), None)
        if var is not None:
            found[known.type] = var
    return found


def key_var(provider_type: str, provider_id: str, environ: Mapping[str, str] | None = None) -> str:
    """The variable a provider's key is read from by default: GROQ_API_KEY for groq."""
    environ = environ or {}
    known = BY_TYPE.get(provider_type)
    if known is not None:
        return next((v for v in known.env if environ.get(v)), known.env[0])
    return re.sub(r"[^A-Z0-9_]", "_", provider_id.upper()) + "_API_KEY"


def new_proxy_key() -> str:
    return secrets.token_urlsafe(32)


def parse_entry(text: str) -> tuple[str, str]:
    """`PROVIDER:MODEL`, split at the first colon (models may have colons: `x/y:free`)."""
    provider, colon, model = text.partition(":")
    if not colon or not provider.strip() or not model.strip():
        raise ValueError(f"{text!r} is not PROVIDER:MODEL (e.g. groq:llama-3.1-8b-instant)")
    return provider.strip(), model.strip()


# --- the generated file ------------------------------------------------------
_PLAIN = re.compile(r"[A-Za-z0-9_.\-/][A-Za-z0-9_.\-/:]*")
_YAML11_SPECIAL = re.compile(r"(?i)y|n|yes|no|on|off|true|false|null|~|[-+]?[0-9][0-9_.:eE+-]*")


def _yaml(value: str) -> str:
    if _PLAIN.fullmatch(value) and not _YAML11_SPECIAL.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _commented(line: str, comment: str) -> str:
    return f"{line:<{max(33, len(line) + 2)}}# {comment}"


# What `init` asks about failing entries (settings.retry): the plain waterfall, or
# staying on the entry the chain prefers through a blip.
class Failover(StrEnum):
    WATERFALL = "waterfall"
    PREFERRED = "preferred"


FAILOVER: dict[Failover, str] = {
    Failover.WATERFALL: "My entries are equals (free tiers): on a failure, move on at once",
    Failover.PREFERRED: "The order is my preference: retry a blip once, wait out 429s of up to 3 s",
}


@dataclass(frozen=True)
class InitPlan:
    providers: dict[str, str]  # type -> key variable, in catalogue order
    chains: tuple[str, ...] = ("fast", "smart")
    port: int = 3429
    failover: Failover = Failover.WATERFALL


def plan(
    types: Sequence[str],
    environ: Mapping[str, str],
    chains: Sequence[str] = ("fast", "smart"),
    port: int = 3429,
    failover: Failover = Failover.WATERFALL,
) -> InitPlan:
    """An InitPlan for these catalogue types, their key variables found in `environ`."""
    chosen = set(types)
    providers = {k.type: key_var(k.type, k.type, environ) for k in KNOWN if k.type in chosen}
    return InitPlan(providers, tuple(c for c in CHAINS if c in chains), port, failover)


def render_config(plan: InitPlan) -> str:
    """The chain429.yaml `init` writes: comments, `${VAR}` references, no secret."""
    chains = [name for name in plan.chains if chain_entries(plan, name)]
    out = [
        "# chain429: free tiers first, a paid provider as the last resort.",
        "# Written by `chain429 init`. Keys come from the environment or from .env beside",
        f"# this file (the proxy key is there as {PROXY_KEY_VAR}, the admin key as",
        f"# {ADMIN_KEY_VAR}); none is written here.",
        "version: 1",
        "",
        "settings:",
        f"  port: {plan.port}",
        "  host: 127.0.0.1",
        "  apiKeys:",
        _commented(f"    - ${{{PROXY_KEY_VAR}}}", "what clients send as their OpenAI API key"),
        _commented(
            f'  adminKeys: ["${{{ADMIN_KEY_VAR}}}"]', "what the CLI sends to change the config"
        ),
    ]
    if chains:
        out.append(_commented(f"  defaultChain: {chains[0]}", "for requests that name no chain"))
    out += [
        _commented("  cooldownDefaultMs: 60000", "a 429 with no hint: wait a minute"),
        "  requestTimeoutMs: 30000",
        *_retry_lines(plan.failover),
        "",
        "providers:",
    ]
    for i, (ptype, var) in enumerate(plan.providers.items()):
        known = BY_TYPE[ptype]
        out += [""] if i else []
        first = f"  - id: {known.type}"
        if known.paid:
            first = _commented(first, "paid: only when every free tier said no")
        out.append(first)
        out += [f"    name: {_yaml(known.name)}", f"    type: {known.type}"]
        out.append(f"    apiKey: ${{{var}}}")
        if known.headers:
            out.append("    headers:")
            out += [f"      {k}: {_yaml(v)}" for k, v in known.headers.items()]
        if known.paid:
            out.append("    paid: true")
    out += ["", "chains:"]
    for i, name in enumerate(chains):
        out += [""] if i else []
        out += [f"  # {CHAINS[name][0]}", f"  - name: {name}", "    entries:"]
        for ptype, model in chain_entries(plan, name):
            out += [f"      - provider: {ptype}", f"        model: {_yaml(model)}"]
    return "\n".join(out) + "\n"


def _retry_lines(failover: Failover) -> list[str]:
    """settings.retry as `init` writes it (docs/config.md#failover-retry-breaker)."""
    if failover is Failover.PREFERRED:
        return [
            _commented("  retry:", "the chain's order is a preference: stay on it"),
            _commented("    attempts: 1", "one quick retry after a 5xx or a cut connection"),
            _commented("    shortWaitMs: 3000", "wait out a 429 that ends within 3 s"),
        ]
    return [
        "  # Entries are equals: a failure moves on at once. If the order is a preference:",
        "  # retry: {attempts: 1, shortWaitMs: 3000}",
    ]


def chain_entries(plan: InitPlan, chain: str) -> list[tuple[str, str]]:
    order = CHAINS[chain][1]
    model = "fast" if chain == "fast" else "smart"
    return [(t, getattr(BY_TYPE[t], model)) for t in order if t in plan.providers]


# What a `${VAR}` that is set nowhere stands for while a config is validated:
# the file may name a key its user has not set yet (it is still a valid file).
def can_prompt() -> bool:
    """A wizard needs a terminal to read answers from and to show its questions on."""
    return sys.stdin.isatty() and sys.stderr.isatty()


@contextlib.contextmanager
def prompting() -> Iterator[None]:
    """Questions go to stderr (stdout is data); Ctrl-C is a clean exit 2."""
    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.output import create_output

    try:
        with create_app_session(output=create_output(stdout=sys.stderr)):
            yield
    except Cancelled:
        raise fail("cancelled; nothing was written") from None


# --- prompts ---------------------------------------------------------------------
class Cancelled(Exception):
    """The user pressed Ctrl-C (or Ctrl-D) at a prompt."""


def _ask(question: Any) -> Any:
    try:
        answer = question.unsafe_ask()
    except (KeyboardInterrupt, EOFError):
        raise Cancelled from None
    if answer is None:
        raise Cancelled
    return answer


def ask_init(found: Mapping[str, str], port: int, preselect: Sequence[str] = ()) -> InitPlan:
    """Providers (those with keys ticked, or `preselect`), chains and port."""
    import questionary

    ticked = set(preselect or found)

    def label(k: Known) -> str:
        notes = [f"{found[k.type]} found" if k.type in found else f"set {k.env[0]} later"]
        return f"{k.name} ({', '.join(notes + ['paid'] * k.paid)})"

    choices = [questionary.Choice(label(k), value=k.type, checked=k.type in ticked) for k in KNOWN]
    types = _ask(
        questionary.checkbox(
            "Providers to use",
            choices,
            validate=lambda picked: bool(picked) or "pick at least one provider",
        )
    )
    chain_choices = [
        questionary.Choice(f"{name}: {CHAINS[name][0]}", value=name, checked=True)
        for name in CHAINS
    ]
    chains = _ask(
        questionary.checkbox(
            "Chains to create",
            chain_choices,
            validate=lambda picked: bool(picked) or "pick at least one chain",
        )
    )
    port_text = _ask(
        questionary.text(
            "Port", default=str(port), validate=lambda t: _port(t) is not None or "1 to 65535"
        )
    )
    failover = _ask(
        questionary.select(
            "When an entry fails (a 5xx, a cut connection, a short 429)",
            [questionary.Choice(text, value=value) for value, text in FAILOVER.items()],
        )
    )
    environ = {var: "found" for var in found.values()}
    return plan(types, environ, tuple(chains), _port(port_text) or port, failover)


def _port(text: str) -> int | None:
    return int(text) if text.strip().isdigit() and 1 <= int(text) <= 65535 else None


def embedding_models(providers: Mapping[str, str]) -> list[str]:
    """`PROVIDER:MODEL` for each embedding model the providers' presets know (id -> type)."""
    return [
        f"{pid}:{model}"
        for pid, ptype in providers.items()
        for model in (PRESETS[ptype].embedding_models if ptype in PRESETS else ())
    ]


def _ask_model(provider_id: str, provider_type: str, kind: str) -> str:
    """A model for an entry: a chat chain suggests the catalogue's fast one; an
    embeddings chain offers the embedding models the provider's preset knows."""
    import questionary

    def typed(default: str = "") -> str:
        answer: str = _ask(
            questionary.text(
                f"Model on {provider_id}",
                default=default,
                validate=lambda t: bool(t.strip()) or "a model name is required",
            )
        )
        return answer.strip()

    if kind != "embeddings":
        known = BY_TYPE.get(provider_type)
        return typed(known.fast if known else "")
    preset = PRESETS.get(provider_type)
    offered = list(preset.embedding_models) if preset is not None else []
    if not offered:
        return typed()
    other = "(another model)"
    picked: str = _ask(questionary.select(f"Embedding model on {provider_id}", [*offered, other]))
    return typed() if picked == other else picked


def ask_entries(providers: Mapping[str, str], kind: str = "chat") -> list[tuple[str, str]]:
    """Entries for a new chain of `kind`: a provider and a model each, then their order.

    For an embeddings chain, providers whose preset knows embedding models say so,
    and those models are offered."""
    import questionary

    done = "(no more entries)"
    entries: list[tuple[str, str]] = []
    while True:
        choices: list[Any] = list(providers)
        if kind == "embeddings":
            choices = [_embedding_choice(pid, ptype) for pid, ptype in providers.items()]
        choices += [done] if entries else []
        picked = _ask(questionary.select(f"Provider for entry {len(entries) + 1}", choices))
        if picked == done:
            break
        entries.append((picked, _ask_model(picked, providers[picked], kind)))
    if len(entries) < 2:
        return entries
    labels = [f"{p}:{m}" for p, m in entries]
    if _ask(questionary.confirm(f"Try them in this order: {', '.join(labels)}?", default=True)):
        return entries
    ordered: list[tuple[str, str]] = []
    remaining = list(range(len(entries)))
    while len(remaining) > 1:
        picks = [questionary.Choice(labels[i], value=i) for i in remaining]
        index = _ask(questionary.select(f"Entry {len(ordered) + 1}", picks))
        ordered.append(entries[index])
        remaining.remove(index)
    return [*ordered, entries[remaining[0]]]


def _embedding_choice(provider_id: str, provider_type: str) -> Any:
    import questionary

    preset = PRESETS.get(provider_type)
    models = preset.embedding_models if preset is not None else ()
    note = f"embeddings: {', '.join(models)}" if models else "no known embedding model"
    return questionary.Choice(f"{provider_id} ({note})", value=provider_id)


@dataclass
class ProviderAnswers:
    type: str
    name: str | None
    base_url: str | None
    api_key_env: str | None  # None: the provider takes no key


def ask_provider(
    provider_id: str,
    ptype: str | None,
    name: str | None,
    base_url: str | None,
    api_key_env: str | None,
    no_key: bool = False,
) -> ProviderAnswers:
    """Ask for what the flags did not give (a local server's preset asks for no key)."""
    import questionary

    if ptype is None:
        ptype = _ask(questionary.select("Provider type", list(PROVIDER_TYPES)))
    known = BY_TYPE.get(ptype)
    if name is None:
        name = _ask(questionary.text("Display name", default=known.name if known else "")) or None
    if base_url is None:
        required = PRESETS[ptype].default_base_url is None
        hint = "Base URL (…/v1)" + ("" if required else "; empty for the preset's")
        base_url = (
            _ask(
                questionary.text(
                    hint,
                    validate=lambda t: _url_ok(t, required) or "an http:// or https:// URL",
                )
            ).strip()
            or None
        )
    if api_key_env is None and not no_key and PRESETS[ptype].needs_key:
        api_key_env = (
            _ask(
                questionary.text(
                    "Environment variable that holds the API key (empty: it takes no key)",
                    default=key_var(ptype, provider_id, os.environ),
                    validate=lambda t: not t or bool(VAR_NAME.fullmatch(t)) or "letters, digits, _",
                )
            ).strip()
            or None
        )
    return ProviderAnswers(ptype, name, base_url, api_key_env)


def _url_ok(text: str, required: bool) -> bool:
    text = text.strip()
    return (not text and not required) or re.match(r"https?://[^/\s]+", text) is not None


# --- testing entries (chain test, provider test) --------------------------------------
PROBE_COLUMNS = ["#", "ENTRY", "RESULT", "STATUS", "LATENCY", "TOKENS", "REMAINING"]


def probe_cells(result: dict[str, Any]) -> list[str]:
    """RESULT .. REMAINING of one probe result, as text."""
    tokens = result.get("tokens") or {}
    used = ""
    if tokens.get("prompt") is not None or tokens.get("completion") is not None:
        used = f"{tokens.get('prompt') or 0} in, {tokens.get('completion') or 0} out"
    quotas = [
        f"{q['remaining']}/{q['limit']} {q['kind']}/{q['window']}"
        for q in result.get("quotas") or []
        if q.get("remaining") is not None
    ]
    status = result.get("status")
    return [
        str(result["result"]),
        "" if status is None else str(status),
        f"{result['latency_ms']:.0f} ms",
        used,
        ", ".join(quotas),
    ]


def run_probe(config: Config, chain_name: str, stream: bool, as_json: bool) -> None:
    """Probe each entry of a chain at once; a live table on a terminal; exit 1 if none works."""
    import asyncio  # here, not at the top: a tenth of the CLI's start-up

    from chain429.routing.runtime import build_snapshot

    snapshot = build_snapshot(config)
    chain = snapshot.chains[chain_name]
    results: list[dict[str, Any] | None] = [None] * len(chain.entries)

    async def probe_all(on_result: Callable[[], None]) -> None:
        from chain429.routing.memory_store import MemoryStateStore
        from chain429.routing.probe import probe_chain
        from chain429.routing.runtime import ChainRuntime
        from chain429.upstream.client import Upstream

        upstream = Upstream(connect_timeout_s=config.settings.connect_timeout_ms / 1000)
        state = MemoryStateStore()

        async def one(i: int) -> None:
            alone = ChainRuntime(chain.name, (chain.entries[i],))
            [results[i]] = await probe_chain(snapshot, alone, upstream, state, stream=stream)
            on_result()

        try:
            await asyncio.gather(*(one(i) for i in range(len(chain.entries))))
        finally:
            await upstream.aclose()

    live = output.interactive() and not as_json
    if live:
        from rich.live import Live

        def render() -> Any:
            from rich.spinner import Spinner

            rows: list[list[Any]] = []
            for i, (entry, result) in enumerate(zip(chain.entries, results, strict=True), 1):
                if result is None:
                    rows.append([i, entry.label, Spinner("dots", "testing")])
                else:
                    cells = probe_cells(result)
                    colour = "green" if result["result"] == "ok" else "red"
                    rows.append([i, entry.label, f"[{colour}]{cells[0]}[/]", *cells[1:]])
            return output.rich_table(PROBE_COLUMNS, rows, title=f"testing {chain_name}")

        with Live(render(), console=output.stdout, refresh_per_second=12) as view:
            asyncio.run(probe_all(lambda: view.update(render())))
    else:
        if not as_json:
            say(f"testing {output.plural(len(chain.entries), 'entry', 'entries')} of {chain_name}")
        asyncio.run(probe_all(lambda: None))
    done = [r for r in results if r is not None]
    working = sum(1 for r in done if r["result"] == "ok")
    if as_json:
        body = {"chain": chain_name, "stream": stream, "working": working, "entries": done}
        output.print_json(body)
    elif not live:
        rows = [
            [i, e.label, *probe_cells(r)]
            for i, (e, r) in enumerate(zip(chain.entries, done, strict=True), 1)
        ]
        output.table(PROBE_COLUMNS, rows)
    works = "works" if len(done) == 1 else "work"
    say(f"{working} of {output.plural(len(done), 'entry', 'entries')} {works}")
    if not working:
        raise typer.Exit(1)
