"""The config's model: frozen pydantic classes of every section.

The schema is a superset of 429chain's (camelCase keys, `version: 1`), so a
429chain config loads unchanged. Validation that spans sections (a chain
naming a provider, the default chain, provider addresses) is
`chain429.config.cross_checks`, which the loader (`chain429.config.loader`)
runs on the raw document so its problems come with lines like every other.
The base class, the field types and the small nested sections (`rateLimits`,
`retry`, `breaker`) are chain429.config.sections'; they are re-exported here.

Each field's `description` is its one explanation, written for users: the
tables of docs/config.md (docs/generate_config_docs.py), the file's JSON
Schema that editors show (`chain429 config schema`, chain429.config.schema)
and the admin API's /openapi.json are all made from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import tzinfo
from typing import Annotated, Any, Literal, Self, get_args
from urllib.parse import urlsplit

from pydantic import (
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from chain429.config.clients import Client
from chain429.config.cross_checks import cross_check
from chain429.config.errors import FIELD_CTX, format_path
from chain429.config.sections import (
    Breaker,
    Count,
    Flag,
    Model,
    PositiveCount,
    Price,
    RateLimits,
    Retry,
    Usd,
)
from chain429.upstream.presets import PRESETS, PROVIDER_TYPES

# The request log's buffer (settings.logBufferSize): 10,000 records of ~1-2 kB
# each ride out a database outage of 100 s at 100 requests/s.
LOG_BUFFER_SIZE = 10_000

__all__ = [
    "CHAIN_KINDS",
    "Breaker",
    "Chain",
    "ChainEntry",
    "ChainKind",
    "Client",
    "Config",
    "Price",
    "Provider",
    "RateLimits",
    "Retry",
    "Settings",
]


LogLevel = Literal["trace", "debug", "info", "warn", "error", "fatal"]
# What a chain serves: chat models (`/v1/chat/completions` and the legacy
# `/v1/completions`) or embedding models (`/v1/embeddings`).
ChainKind = Literal["chat", "embeddings"]
CHAIN_KINDS: tuple[ChainKind, ...] = get_args(ChainKind)


def _listed(names: Iterable[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


class Settings(Model):
    """How the server listens, waits, cools down and logs."""

    port: Count = Field(
        default=3429,
        ge=1,
        le=65535,
        description="Port to listen on. `$PORT` and `serve --port` override it (the flag wins).",
    )
    host: str = Field(
        default="127.0.0.1",
        description="Bind address; `serve --host` overrides it. Without `apiKeys` or "
        "`clients`, only a loopback address is allowed.",
    )
    api_keys: tuple[str, ...] = Field(
        default=(),
        description="Keys clients send (`Authorization: Bearer <key>` or `x-api-key`), shared "
        "and anonymous; `clients` gives each caller a key of its own. Empty, with no "
        "`clients`: no auth, loopback only.",
    )
    admin_keys: tuple[str, ...] = Field(
        default=(),
        description="Keys for every route, admin ones included. Empty: the `apiKeys` may read "
        "the admin API but not change the config (429chain let them); `clients`' keys never "
        "may.",
    )
    default_chain: str | None = Field(
        default=None,
        description="Chain for a request whose `model` names no chain and no entry's model "
        "(docs/api.md#choosing-a-chain); must name a chain. Without one, such a request is a "
        "404 `model_not_found`.",
    )
    log_level: LogLevel = Field(
        default="info",
        description=f"Least severe log message written: {_listed(get_args(LogLevel))}.",
    )
    cooldown_default_ms: Count = Field(
        default=60000,
        ge=0,
        description="Milliseconds an entry rests after a 429 that carries no hint (no "
        "`Retry-After`, reset header or body hint).",
    )
    request_timeout_ms: Count = Field(
        default=30000,
        gt=0,
        description="Milliseconds an upstream call may take, connecting aside; a provider's "
        "`timeout` overrides it.",
    )
    connect_timeout_ms: Count = Field(
        default=5000, gt=0, description="Milliseconds to open a connection to a provider."
    )
    payment_cooldown_ms: Count = Field(
        default=300000,
        ge=0,
        description="Milliseconds a whole provider rests after a 402 (payment required).",
    )
    unhealthy_cooldown_ms: Count = Field(
        default=600000,
        ge=0,
        description="Milliseconds of rest after a 401/403 (the whole provider: a bad key) or a "
        "404 (that entry: an unknown model).",
    )
    normalize_responses: Flag = Field(
        default=False,
        description="Move `reasoning_content` into an empty `content`, for clients that read "
        "only `content`.",
    )
    strict_models: Flag = Field(
        default=False,
        description="When true, a `model` that names no chain and no entry's model is a 404 "
        "`model_not_found` instead of going to `defaultChain`.",
    )
    max_body_bytes: Count = Field(
        default=10 * 1024 * 1024,
        ge=1,
        description="Largest request body, in bytes; a larger one gets a 413.",
    )
    access_log: Flag = Field(
        default=False, description="Log every HTTP request (also `serve --access-log`)."
    )
    stream_idle_timeout_ms: Count = Field(
        default=20000,
        gt=0,
        description="Milliseconds a stream may stay silent after its first token; then it ends "
        "with a `stream_stalled` error event. Keep-alives (comments, blank lines, events "
        "without data) are silence.",
    )
    first_token_timeout_ms: Count = Field(
        default=10000,
        gt=0,
        description="Milliseconds a stream may take to send its first token (content, a "
        "reasoning delta or a tool call), counted from when the request is sent, headers "
        "included; with none by then it falls through to the next entry.",
    )
    max_upstream_body_bytes: Count = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Largest answer taken from a provider, in bytes, on the wire or after "
        "undoing gzip/deflate; a larger one is refused (`upstream_too_large`: the next entry "
        "is tried, this one rests 1 min). For a stream it bounds what is read before the "
        "first token, and the answer text kept.",
    )
    max_sse_event_bytes: Count = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest SSE event (or line) of a provider's stream, in bytes. A larger "
        "one before the first token is `upstream_too_large` (the next entry is tried); after "
        "it, the stream ends with a `stream_interrupted` error event.",
    )
    stream_max_duration_ms: Count = Field(
        default=30 * 60 * 1000,
        gt=0,
        description="Milliseconds a stream may go on after its first token; then it ends with "
        "a `stream_too_long` error event.",
    )
    db_path: str | None = Field(
        default=None,
        description="429chain's SQLite file for the request log, used when `databaseUrl` is "
        "not set. Neither set: `chain429.db` in the user data dir (`$CHAIN429_HOME` moves it).",
    )
    database_url: str | None = Field(
        default=None,
        description="The request log's database: `sqlite:///path` or `postgresql://...` (see "
        "docs/observability.md).",
    )
    mid_stream_failure_threshold: Count = Field(
        default=3,
        ge=1,
        description="Streams of one entry that die mid-answer in a row before it rests "
        "`midStreamCooldownMs`.",
    )
    mid_stream_cooldown_ms: Count = Field(
        default=120000,
        ge=0,
        description="Milliseconds an entry rests after `midStreamFailureThreshold` mid-answer "
        "stream failures in a row; each further failure doubles it, up to "
        "`midStreamCooldownMaxMs`.",
    )
    mid_stream_cooldown_max_ms: Count = Field(
        default=1800000,
        ge=0,
        description="Longest rest after mid-answer stream failures, in milliseconds.",
    )
    queue_mode: Flag = Field(
        default=False,
        description="When every entry is cooling down, wait for the earliest known recovery "
        "and try again instead of answering 503.",
    )
    queue_max_wait_ms: Count = Field(
        default=300000,
        ge=0,
        description="With `queueMode`, a request waits only if some entry recovers within this "
        "many milliseconds; otherwise it gets the 503 at once.",
    )
    queue_max_size: Count = Field(
        default=100,
        ge=1,
        description="With `queueMode`, the requests of one chain that may wait at once; more "
        "get the 503.",
    )
    mid_stream: Literal["error", "continue"] = Field(
        default="error",
        description="A stream that dies after its first token: `error` ends the client's "
        "stream with an error event; `continue` finishes the answer on a later entry: one "
        "with `supportsPrefill: true` continues the partial answer; one without is asked "
        "afresh, and only the rest of its answer is streamed if it begins with what the "
        "client already has (else the error event).",
    )
    retry: Retry = Field(
        default_factory=lambda: Retry(attempts=0, short_wait_ms=0),
        description="Same-entry retries and short waits for every entry; a provider's or an "
        "entry's `retry` overrides it key by key (see the `retry` table).",
    )
    max_attempts_per_request: PositiveCount | None = Field(
        default=None,
        description="Upstream calls one walk of a chain may make, retries included; past it "
        "the remaining entries are skipped (`skip:budget`). Unset: the chain's length + 2.",
    )
    breaker: Breaker = Field(
        default_factory=Breaker,
        description="The circuit breaker for entries that keep failing (see the `breaker` table).",
    )
    wait_before_paid_ms: Count = Field(
        default=0,
        ge=0,
        description="Before spilling to a paid entry, wait up to this many milliseconds for a "
        "free entry known to recover sooner.",
    )
    paid_budget_usd_per_day: Usd | None = Field(
        default=None,
        description="US dollars all requests together may spend on paid entries per calendar "
        "day (`timeZone`); once spent, paid entries are skipped (`skip:budget`) until "
        "midnight. Each paid call first reserves its estimated cost, then is charged what the "
        "provider reports, so concurrent requests are never let past it together "
        "(docs/spend.md). Every paid entry needs a `price` then. Unset: no cap.",
    )
    client_retry_max_wait_ms: Count = Field(
        default=10000,
        ge=0,
        description="A 503 whose earliest recovery is further away than this many milliseconds "
        "says `x-should-retry: false` (SDKs raise at once); a sooner one invites the SDK's "
        "retry, which lands after the recovery (OpenAI's SDKs otherwise wait up to minutes; "
        "docs/api.md#retrying).",
    )
    time_zone: str = Field(
        default="UTC",
        description="The IANA time zone (`Europe/Paris`, `America/New_York`) whose midnight "
        "resets the server's own calendar days: clients' daily limits and paid budgets. "
        "Providers' daily quotas keep each provider's own day.",
    )
    state_store: str | None = Field(
        default=None,
        pattern=r"^(rediss?|unix)://",
        description="Unset keeps rate-limit state in this process; `redis://host:6379/0` shares "
        "it between instances (docs/scaling.md). `$CHAIN429_STATE_URL` overrides. Read at start.",
    )
    state_namespace: str = Field(
        default="chain429",
        pattern=r"^[^{}\s]+$",
        description="Prefix of the shared store's keys: deployments can share a Redis.",
    )
    state_store_failure: Literal["open", "closed"] = Field(
        default="open",
        description="Shared store unreachable: `open` serves on this instance's own limits "
        "(`/health` degraded); `closed` answers 503 `state_store_unavailable`.",
    )
    state_lease_ms: Count = Field(
        default=30000,
        ge=1000,
        description="A shared concurrency slot is a lease renewed while its request runs: a "
        "killed instance's slots come back within this many milliseconds.",
    )
    log_retention_days: Count = Field(
        default=30,
        ge=0,
        description="Request log rows older than this many days are pruned; `0` keeps everything.",
    )
    log_buffer_size: Count = Field(
        default=LOG_BUFFER_SIZE,
        ge=1,
        description="Request records held in memory while not yet written (queued, or in a "
        "batch being retried while the database is down); records that find it full are "
        "dropped and counted (docs/observability.md#what-can-be-lost). Read at start.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="`text`, or `json`: one JSON object per log line."
    )
    metrics_public: Flag = Field(default=False, description="Serve `/metrics` without a key.")
    allowed_hosts: tuple[str, ...] = Field(
        default=(),
        description="Host names (no port) the server answers to besides `localhost`, "
        "`*.localhost`, `127.0.0.1` and `::1`. Checked on every request when there are no "
        "`apiKeys` (a 421 otherwise: DNS rebinding), and only if set when there are (a server "
        "behind a load balancer). See docs/security.md.",
    )
    cors_origins: tuple[str, ...] = Field(
        default=(),
        description="Web origins (`https://app.example`) whose pages may call the server: "
        "CORS preflights are answered, and their state-changing requests accepted, for these "
        "only. `*` (any page) needs `apiKeys`.",
    )
    allow_private_upstreams: tuple[str, ...] = Field(
        default=(),
        description="Link-local / cloud-metadata addresses (`169.254.0.0/16`, "
        "`fd00:ec2::254`, `metadata.google.internal`), networks or names that a provider's "
        "`baseUrl` may use after all; refused otherwise.",
    )
    client_header_timeout_ms: Count = Field(
        default=10000,
        gt=0,
        description="Milliseconds a client has to send a request's headers, counted from "
        "accept (first request) or from the request's first byte (later ones on a kept-alive "
        "connection); else 408, or just a close if it sent nothing. A total: bytes trickling "
        "in do not restart it.",
    )
    client_body_timeout_ms: Count = Field(
        default=60000,
        gt=0,
        description="Milliseconds a client has to send the whole body after its headers; else "
        "408. A total: bytes trickling in do not restart it.",
    )
    keep_alive_timeout_ms: Count = Field(
        default=15000,
        gt=0,
        description="Milliseconds after which an idle keep-alive connection closes. Clients, "
        "and a load balancer in front, should drop idle connections sooner (httpx: 5 s).",
    )
    max_connections: Count = Field(
        default=1024,
        ge=1,
        description="Open client connections at most; past it a new connection gets a 503 and "
        "is closed at once.",
    )

    # A list whose items are all commented out parses as null; that means "none".
    @field_validator(
        "api_keys",
        "admin_keys",
        "allowed_hosts",
        "cors_origins",
        "allow_private_upstreams",
        mode="before",
        json_schema_input_type=tuple[str, ...] | None,
    )
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return () if value is None else value

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; write an IANA name such as `UTC` or `Europe/Paris`"
            ) from None
        return value

    @property
    def zone(self) -> tzinfo:
        """`timeZone` as a tzinfo (checked at load, so it exists)."""
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.time_zone)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            parts = urlsplit(origin)
            if origin != "*" and (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
            ):
                raise ValueError(
                    f"{origin!r} is not an origin: write scheme://host[:port], or * for any"
                )
        return tuple(origin.rstrip("/").lower() for origin in value)


class Provider(Model):
    """An LLM provider: where it is, its key, and how to treat it."""

    id: str = Field(
        min_length=1,
        description="Unique name, used by chain entries, headers and traces; no `/` (an entry "
        "is named `<id>/<model>`, and models may contain slashes).",
        json_schema_extra={"pattern": "^[^/]+$"},
    )
    name: str | None = Field(default=None, description="Display name.")
    type: str = Field(
        description=f"A preset: {_listed(PROVIDER_TYPES)}. It says the default `baseUrl`, how "
        "the provider reports rate limits, and where it counts its quota.",
        json_schema_extra={"enum": list(PROVIDER_TYPES)},
    )
    api_key: str | None = Field(
        default=None,
        description="The provider key; write it as `${VAR}`. Without one, no `Authorization` "
        "header is sent (local servers take none).",
    )
    base_url: str | None = Field(
        default=None,
        description="The API's base URL (`http://` or `https://`, up to `/v1`), instead of "
        "the preset's; required for "
        + _listed(t for t in PROVIDER_TYPES if PRESETS[t].default_base_url is None)
        + ".",
    )
    timeout: PositiveCount | None = Field(
        default=None,
        description="Milliseconds a call to this provider may take; overrides "
        "`settings.requestTimeoutMs`.",
    )
    rate_limits: RateLimits | None = Field(
        default=None,
        description="Limits for a provider that sends no rate-limit headers (docs/ratelimits.md).",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra headers sent to this provider, e.g. OpenRouter's `HTTP-Referer` and "
        "`X-Title`.",
    )
    paid: Flag = Field(
        default=False,
        description="A paid provider, a last resort: with `settings.waitBeforePaidMs`, "
        "chain429 first waits for a free entry; with a paid budget "
        "(`settings.paidBudgetUsdPerDay`, a client's), its spend is capped.",
    )
    price: Price | None = Field(
        default=None,
        description="What its calls cost (`inputPerMTok`, `outputPerMTok`: US dollars per "
        "million tokens): each request's cost is logged and counted in stats, and a paid "
        "budget is held to it. An entry's `price` overrides it.",
    )
    supports_prefill: Flag = Field(
        default=False,
        description="`true` if the provider continues a final assistant message (for "
        "`settings.midStream: continue`).",
    )
    retry: Retry | None = Field(
        default=None,
        description="Overrides `settings.retry` for this provider's entries, key by key.",
    )
    quota_scope: Literal["model", "account", "free"] | None = Field(
        default=None,
        description="Where the provider counts its quota, instead of where its preset says: "
        "per `model`, per `account`, or `free` (OpenRouter's: `:free` models share one "
        "account-wide quota).",
    )

    @field_validator("id")
    @classmethod
    def _no_slash(cls, value: str) -> str:
        # `groq/llama-3.3-70b` names an entry, split at the first slash: the trace,
        # the headers and `chain429 entry pause` read it so. A slash in an id would
        # make `a/b/c` mean two entries.
        if "/" in value:
            raise ValueError(f"{value!r} contains '/': entries are named <id>/<model>")
        return value

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(
                f"unknown provider type {value!r}; valid types: {', '.join(PROVIDER_TYPES)}"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"must be an http:// or https:// URL (got {value!r})")
        return value

    @field_validator("headers", mode="before", json_schema_input_type=dict[str, str] | None)
    @classmethod
    def _null_headers(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _base_url_known(self) -> Self:
        if self.base_url is None and PRESETS[self.type].default_base_url is None:
            raise PydanticCustomError(
                "base_url_required",
                "required when type is {type} (it has no default URL)",
                {"type": self.type, FIELD_CTX: "baseUrl"},
            )
        return self

    @property
    def display_name(self) -> str:
        return self.name or self.id

    @property
    def resolved_base_url(self) -> str:
        url = self.base_url or PRESETS[self.type].default_base_url
        if url is None:  # unreachable: _base_url_known rejects this at load
            raise ValueError(f"provider {self.id!r} has no baseUrl")
        return url.rstrip("/")


class ChainEntry(Model):
    """One (provider, model) pair of a chain."""

    provider: str = Field(min_length=1, description="The `id` of a provider.")
    model: str = Field(min_length=1, description="The model, sent upstream as `model`.")
    rate_limits: RateLimits | None = Field(
        default=None, description="Replaces the provider's `rateLimits` for this entry."
    )
    paid: Flag | None = Field(
        default=None, description="Overrides the provider's `paid` for this entry."
    )
    price: Price | None = Field(
        default=None,
        description="Overrides the provider's `price` for this entry (a provider's models "
        "rarely cost the same).",
    )
    supports_prefill: Flag | None = Field(
        default=None, description="Overrides the provider's `supportsPrefill` for this entry."
    )
    retry: Retry | None = Field(
        default=None,
        description="Overrides the provider's `retry` (and `settings.retry`) for this entry, "
        "key by key.",
    )


class Chain(Model):
    """An ordered list of entries that a request names as its `model`."""

    name: str = Field(
        min_length=1, description="Unique; clients select the chain by sending it as `model`."
    )
    kind: ChainKind = Field(
        default="chat",
        description="What its entries serve: `chat` models (`/v1/chat/completions`, and the "
        "legacy `/v1/completions`) or `embeddings` models (`/v1/embeddings`). A request to "
        "the other kind's route is a 400 `wrong_endpoint` (docs/api.md#endpoints-and-chain-kinds).",
    )
    entries: tuple[ChainEntry, ...] = Field(
        min_length=1, description="The entries in order of preference: the first is tried first."
    )


# An alias and the chain it names: non-empty strings.
_Name = Annotated[str, Field(min_length=1)]


# Validation context key: the loader runs the cross-field checks itself, on
# the raw document, so it can report them with paths next to field errors.
_DEFER_CROSS_CHECKS = "chain429.defer_cross_checks"


class Config(Model):
    """A chain429 config file (429chain's schema, and more)."""

    version: Literal[1] = Field(
        default=1,
        description="Always `1`, and required in a file: one without it (`{}`, a stray YAML "
        "document) is not a config.",
    )
    settings: Settings = Field(default_factory=Settings, description="Server-wide settings.")
    providers: tuple[Provider, ...] = Field(
        default=(), description="The LLM providers, each with its key."
    )
    chains: tuple[Chain, ...] = Field(
        default=(), description="Named, ordered lists of (provider, model) entries."
    )
    clients: tuple[Client, ...] = Field(
        default=(),
        description="Callers with their own keys, chains, limits and paid budgets "
        "(docs/clients.md).",
    )
    aliases: dict[_Name, _Name] = Field(
        default_factory=dict,
        description="Other names for chains, `alias: chain`: a request whose `model` is the "
        "alias is served by that chain (`gpt-4o-mini: fast` catches apps that hard-code a "
        "model). An alias may not be a chain's name; it wins over an entry model of the same "
        "name. Listed in `/v1/models`; answers say `X-429chain-Route: alias`.",
    )

    _providers_by_id: dict[str, Provider] = PrivateAttr(default_factory=dict)
    _chains_by_name: dict[str, Chain] = PrivateAttr(default_factory=dict)
    _clients_by_name: dict[str, Client] = PrivateAttr(default_factory=dict)
    # Set by the loader: the variables the file references, and each resolved
    # value with the reference it came from (so answers can show the reference).
    _references: frozenset[str] = PrivateAttr(default_factory=frozenset)
    _resolved: dict[str, str] = PrivateAttr(default_factory=dict)

    # A section with every line commented out parses as null; that means "none".
    @field_validator("settings", mode="before", json_schema_input_type=Settings | None)
    @classmethod
    def _null_settings(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("providers", mode="before", json_schema_input_type=tuple[Provider, ...] | None)
    @classmethod
    def _null_providers(cls, value: Any) -> Any:
        return () if value is None else value

    @field_validator("chains", mode="before", json_schema_input_type=tuple[Chain, ...] | None)
    @classmethod
    def _null_chains(cls, value: Any) -> Any:
        return () if value is None else value

    @field_validator("clients", mode="before", json_schema_input_type=tuple[Client, ...] | None)
    @classmethod
    def _null_clients(cls, value: Any) -> Any:
        return () if value is None else value

    @field_validator("aliases", mode="before", json_schema_input_type=dict[str, str] | None)
    @classmethod
    def _null_aliases(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Self:
        if not (info.context or {}).get(_DEFER_CROSS_CHECKS):
            problems = cross_check(self.model_dump(by_alias=True))
            if problems:
                raise ValueError("; ".join(f"{format_path(loc)}: {msg}" for loc, msg in problems))
        return self

    def model_post_init(self, context: Any, /) -> None:
        for provider in self.providers:
            self._providers_by_id.setdefault(provider.id, provider)
        for chain in self.chains:
            self._chains_by_name.setdefault(chain.name, chain)
        for client in self.clients:
            self._clients_by_name.setdefault(client.name, client)

    def provider(self, id: str) -> Provider:
        return self._providers_by_id[id]

    def chain(self, name: str) -> Chain | None:
        return self._chains_by_name.get(name)

    def client(self, name: str) -> Client | None:
        return self._clients_by_name.get(name)

    @property
    def references(self) -> frozenset[str]:
        """The environment variables this config's file references."""
        return self._references

    @property
    def resolved_values(self) -> Mapping[str, str]:
        """Each value a `${VAR}` resolved to, mapped to its reference."""
        return self._resolved
