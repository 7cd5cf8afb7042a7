"""An immutable, request-ready view of one loaded config.

Everything the request path would otherwise recompute per request (URLs,
upstream headers, timeouts, the /v1/models body, key bytes for auth, each
client's limits, chains and key digest) is built once here. A reload builds a
new `Snapshot` and swaps one reference, so a request in flight keeps the
snapshot it started with.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from chain429.config.model import Chain, ChainKind, Client, Config, Price, RateLimits
from chain429.config.sections import resolve_retry
from chain429.routing.endpoints import ROUTE, UPSTREAM_PATH, Endpoint, serving
from chain429.routing.outcome import CooldownPolicy
from chain429.upstream.client import request_headers
from chain429.upstream.dialects import Dialect
from chain429.upstream.presets import bucket_key, preset_for


@dataclass(frozen=True, slots=True)
class EntryRuntime:
    provider_id: str
    model: str
    label: str  # "<provider id>/<model>", as the trace and headers name it
    url: str  # where chat completions are asked: `url_for` names the other endpoints'
    headers: dict[str, str] = field(repr=False)  # carries the provider key: never log
    stream_headers: dict[str, str] = field(repr=False)
    timeout_s: float
    paid: bool
    asks_stream_usage: bool  # the preset accepts stream_options.include_usage
    supports_prefill: bool  # may be sent a partial answer to continue
    dialect: Dialect  # how the provider reports its quotas (its preset's)
    bucket: str  # the quota it draws from, shared with entries of the same key
    limits: RateLimits | None  # configured limits: the entry's own, else its provider's
    price: Price | None = None  # what its calls cost: the entry's own, else its provider's
    # Same-entry retry policy (settings.retry, overridden by the provider's, then the entry's).
    retry_attempts: int = 0  # extra calls after a transient failure
    short_wait_s: float = 0.0  # a 429 recovering within this is waited for
    kind: ChainKind = "chat"  # its chain's: what it serves (chain429.routing.endpoints)
    base_url: str = ""  # the provider's, up to `/v1`

    def url_for(self, endpoint: Endpoint) -> str:
        """Where this entry is asked a request on `endpoint`."""
        if endpoint is Endpoint.CHAT:
            return self.url
        return self.base_url + UPSTREAM_PATH[endpoint]


@dataclass(frozen=True, slots=True)
class ChainRuntime:
    name: str
    entries: tuple[EntryRuntime, ...]

    @property
    def kind(self) -> ChainKind:
        """What the chain serves; its entries all come from chains of this kind."""
        return self.entries[0].kind if self.entries else "chat"


@dataclass(frozen=True, slots=True)
class ClientRuntime:
    """A `clients:` entry as the request path needs it; never its key."""

    name: str
    chains: frozenset[str] | None  # the chains it may name; None: every chain
    entries: frozenset[str] | None  # the entry labels those chains hold (for entry models)
    limits: RateLimits | None  # its own requests/tokens per minute and day, if any
    zone: tzinfo  # settings.timeZone: when its day ends
    models_body: bytes | None  # its /v1/models, only what it may use; None: everything

    @property
    def bucket(self) -> str:
        """The key its counters have in a state store (never a provider bucket's: those
        hold a `/`)."""
        return f"client:{self.name}"

    def may_use(self, chain: ChainRuntime, route: str) -> bool:
        """Whether this client may send to `chain`: one of its chains by name, or (an
        entry model's implicit chain) entries all of which are in its chains."""
        if self.chains is None or self.entries is None:
            return True
        if route == "model":
            return all(entry.label in self.entries for entry in chain.entries)
        return chain.name in self.chains


def key_digest(key: bytes) -> bytes:
    """What a client key is looked up by: its SHA-256, so a lookup is one dict access
    whose timing says nothing about how close a wrong key came."""
    return hashlib.sha256(key).digest()


@dataclass(frozen=True)
class Snapshot:
    config: Config
    generation: int
    loaded_at: float
    chains: dict[str, ChainRuntime]
    # `aliases:`: another name for a chain (the same ChainRuntime).
    aliases: dict[str, ChainRuntime]
    # An entry model that names no chain (nor alias) selects every entry serving it,
    # in config order: `llama-3.3-70b-versatile` fails over across its providers.
    # Its entries come from chains of one kind: the kind it was first seen in.
    model_chains: dict[str, ChainRuntime]
    default_chain: ChainRuntime | None
    policy: CooldownPolicy
    proxy_keys: tuple[bytes, ...] = field(repr=False)
    admin_keys: tuple[bytes, ...] = field(repr=False)
    models_body: bytes = b""
    clients: Mapping[str, ClientRuntime] = field(default_factory=dict)  # by name
    client_keys: Mapping[bytes, ClientRuntime] = field(default_factory=dict, repr=False)
    # Browser safety (chain429.server.guard): whether `Host` is checked, and against what.
    check_host: bool = True
    allowed_hosts: frozenset[str] = frozenset()
    cors_origins: frozenset[str] = frozenset()
    # Paid budgets, US dollars per day (docs/spend.md): everybody's, and each client's own.
    paid_budget_usd: float | None = None
    client_budgets_usd: dict[str, float] = field(default_factory=dict)


def build_snapshot(config: Config, generation: int = 1) -> Snapshot:
    settings = config.settings
    chains = {chain.name: _chain_runtime(config, chain) for chain in config.chains}
    default = chains.get(settings.default_chain) if settings.default_chain else None
    aliases = {alias: chains[chain] for alias, chain in config.aliases.items()}
    by_model: dict[str, dict[str, EntryRuntime]] = {}
    for chain_runtime in chains.values():
        for entry in chain_runtime.entries:
            if entry.model not in chains and entry.model not in aliases:
                found = by_model.setdefault(entry.model, {})
                first = next(iter(found.values()), entry)
                if entry.kind == first.kind:  # a chat and an embedding model of one name
                    found.setdefault(entry.label, entry)
    loaded_at = time.time()
    models = _models_data(config, int(loaded_at))
    clients = {
        client.name: _client_runtime(config, client, chains, models) for client in config.clients
    }
    return Snapshot(
        config=config,
        generation=generation,
        loaded_at=loaded_at,
        chains=chains,
        aliases=aliases,
        model_chains={
            model: ChainRuntime(model, tuple(entries.values()))
            for model, entries in by_model.items()
        },
        default_chain=default,
        policy=CooldownPolicy(
            default_s=settings.cooldown_default_ms / 1000,
            payment_s=settings.payment_cooldown_ms / 1000,
            unhealthy_s=settings.unhealthy_cooldown_ms / 1000,
            mid_stream_threshold=settings.mid_stream_failure_threshold,
            mid_stream_base_s=settings.mid_stream_cooldown_ms / 1000,
            mid_stream_max_s=settings.mid_stream_cooldown_max_ms / 1000,
            breaker_failures=settings.breaker.failures,
            breaker_base_s=settings.breaker.base_ms / 1000,
            breaker_max_s=settings.breaker.max_ms / 1000,
        ),
        proxy_keys=tuple(key.encode() for key in settings.api_keys),
        admin_keys=tuple(key.encode() for key in settings.admin_keys),
        models_body=json.dumps({"object": "list", "data": models}).encode(),
        clients=clients,
        client_keys={
            key_digest(client.key.encode()): clients[client.name] for client in config.clients
        },
        # Keyless, the only thing between a web page and the admin API is the
        # Host check (DNS rebinding); with keys, only if the user asks for it.
        check_host=not (settings.api_keys or config.clients) or bool(settings.allowed_hosts),
        allowed_hosts=frozenset(h.lower().rstrip(".") for h in settings.allowed_hosts),
        cors_origins=frozenset(settings.cors_origins),
        paid_budget_usd=settings.paid_budget_usd_per_day,
        client_budgets_usd={
            client.name: client.paid_budget_usd_per_day
            for client in config.clients
            if client.paid_budget_usd_per_day is not None
        },
    )


def _chain_runtime(config: Config, chain: Chain) -> ChainRuntime:
    settings = config.settings
    entries = []
    for entry in chain.entries:
        provider = config.provider(entry.provider)
        base_url = provider.resolved_base_url
        timeout_ms = provider.timeout or settings.request_timeout_ms
        headers = request_headers(provider.api_key, dict(provider.headers))
        prefill = entry.supports_prefill
        preset = preset_for(provider.type)
        scope = provider.quota_scope or preset.quota_scope
        attempts, short_wait_ms = resolve_retry(entry.retry, provider.retry, settings.retry)
        entries.append(
            EntryRuntime(
                provider_id=provider.id,
                model=entry.model,
                label=f"{provider.id}/{entry.model}",
                url=base_url + UPSTREAM_PATH[Endpoint.CHAT],
                headers=headers,
                stream_headers={**headers, "accept": "text/event-stream"},
                timeout_s=timeout_ms / 1000,
                paid=provider.paid if entry.paid is None else entry.paid,
                asks_stream_usage=preset.supports_stream_usage,
                supports_prefill=provider.supports_prefill if prefill is None else prefill,
                dialect=preset.dialect,
                bucket=bucket_key(provider.id, scope, entry.model),
                limits=entry.rate_limits or provider.rate_limits,
                price=entry.price or provider.price,
                retry_attempts=attempts,
                short_wait_s=short_wait_ms / 1000,
                kind=chain.kind,
                base_url=base_url,
            )
        )
    return ChainRuntime(chain.name, tuple(entries))


def _client_runtime(
    config: Config, client: Client, chains: dict[str, ChainRuntime], models: list[dict[str, Any]]
) -> ClientRuntime:
    limited = {
        "requests_per_minute": client.requests_per_minute,
        "tokens_per_minute": client.tokens_per_minute,
        "requests_per_day": client.requests_per_day,
        "tokens_per_day": client.tokens_per_day,
    }
    limits = RateLimits(**limited) if any(limited.values()) else None
    allowed = entries = None
    body = None
    if client.chains is not None:
        allowed = frozenset(client.chains)
        entries = frozenset(e.label for name in allowed for e in chains[name].entries)
        # An entry model is listed when every provider serving it is in the client's chains.
        served = {(e.model, e.provider_id) for name in allowed for e in chains[name].entries}
        mine = [
            item
            for item in models
            if (item["kind"] == "chain" and item["id"] in allowed)
            or (item["kind"] == "alias" and item["chain"] in allowed)
            or (
                item["kind"] == "model"
                and all((item["id"], p) in served for p in item["providers"])
            )
        ]
        body = json.dumps({"object": "list", "data": mine}).encode()
    return ClientRuntime(
        name=client.name,
        chains=allowed,
        entries=entries,
        limits=limits,
        zone=config.settings.zone,
        models_body=body,
    )


def _models_data(config: Config, created: int) -> list[dict[str, Any]]:
    """OpenAI's model list of what `model` may name: every chain, every alias (with the
    chain it names), then each entry model (an implicit chain of the entries serving
    it); `kind` says which, `chain_kind` what it serves (`chat` or `embeddings`),
    `endpoints` the routes that take it."""
    data: list[dict[str, Any]] = [
        {
            "id": chain.name,
            "object": "model",
            "created": created,
            "owned_by": "chain429",
            "kind": "chain",
            "chain_kind": chain.kind,
            "endpoints": [ROUTE[e] for e in serving(chain.kind)],
        }
        for chain in config.chains
    ]
    kind_of = {c.name: c.kind for c in config.chains}
    data += [
        {
            "id": alias,
            "object": "model",
            "created": created,
            "owned_by": "chain429",
            "kind": "alias",
            "chain": chain,
            "chain_kind": kind_of.get(chain, "chat"),
            "endpoints": [ROUTE[e] for e in serving(kind_of.get(chain, "chat"))],
        }
        for alias, chain in config.aliases.items()
    ]
    providers: dict[str, tuple[ChainKind, list[str]]] = {}
    names = {c.name for c in config.chains} | set(config.aliases)
    for chain in config.chains:
        for entry in chain.entries:
            if entry.model not in names:
                kind, listed = providers.setdefault(entry.model, (chain.kind, []))
                if kind == chain.kind and entry.provider not in listed:
                    listed.append(entry.provider)
    for model, (kind, listed) in providers.items():
        data.append(
            {
                "id": model,
                "object": "model",
                "created": created,
                "owned_by": listed[0],
                "kind": "model",
                "chain_kind": kind,
                "endpoints": [ROUTE[e] for e in serving(kind)],
                "providers": listed,
            }
        )
    return data
