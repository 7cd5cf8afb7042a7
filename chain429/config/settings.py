"""The `settings:` section: how the server listens, waits, cools down, logs and counts.

One flat section of scalars (and `retry`, `breaker`), each declared once with
its description: docs/config.md's settings table, the JSON Schema and the
admin API's settings routes are made from these fields. Some are read only
at start (where it listens, the request log, the state store); the admin API
refuses to change those, as docs/admin.md says.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from chain429.config.sections import (
    Breaker,
    Count,
    Flag,
    Model,
    PositiveCount,
    Retry,
    Usd,
    listed,
)

__all__ = ["LOG_BUFFER_SIZE", "LogLevel", "Settings"]

# The request log's buffer (settings.logBufferSize): 10,000 records of ~1-2 kB
# each ride out a database outage of 100 s at 100 requests/s.
LOG_BUFFER_SIZE = 10_000

LogLevel = Literal["trace", "debug", "info", "warn", "error", "fatal"]


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
        description=f"Least severe log message written: {listed(get_args(LogLevel))}.",
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
