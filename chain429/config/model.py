"""The config's model: frozen pydantic classes of every section, and their cross-checks.

The schema is a superset of 429chain's (camelCase keys, `version: 1`), so a
429chain config loads unchanged. Validation that spans sections (a chain
naming a provider, the default chain, provider addresses) is `cross_check`,
which the loader (`chain429.config.loader`) runs on the raw document so its
problems come with lines like every other.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from chain429.config.errors import (
    FIELD_CTX,
    Loc,
    format_path,
)
from chain429.upstream.addresses import forbidden_upstream, host_of
from chain429.upstream.presets import PRESETS, PROVIDER_TYPES

# The request log's buffer (settings.logBufferSize): 10,000 records of ~1-2 kB
# each ride out a database outage of 100 s at 100 requests/s.
LOG_BUFFER_SIZE = 10_000

__all__ = [
    "Chain",
    "ChainEntry",
    "Config",
    "Provider",
    "RateLimits",
    "Settings",
    "cross_check",
]


def _no_number(value: Any) -> Any:
    # `paid: 1` is a typo or a JSON client's mistake; a string (from a ${VAR},
    # or YAML's own yes/no) is still read the lenient way.
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"expected true or false (got {value!r})")
    return value


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number (got {str(value).lower()})")
    return value


# Lenient about strings, since `${VAR}` always yields one, but not about
# numbers for flags or flags for numbers.
Flag = Annotated[bool, BeforeValidator(_no_number)]
Count = Annotated[int, BeforeValidator(_no_bool)]


class Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, alias_generator=to_camel
    )


class RateLimits(Model):
    requests_per_minute: Count | None = Field(default=None, ge=1)
    tokens_per_minute: Count | None = Field(default=None, ge=1)
    requests_per_day: Count | None = Field(default=None, ge=1)
    tokens_per_day: Count | None = Field(default=None, ge=1)
    concurrent_requests: Count | None = Field(default=None, ge=1)


class Settings(Model):
    port: Count = Field(default=3429, ge=1, le=65535)
    host: str = "127.0.0.1"
    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    default_chain: str | None = None
    log_level: Literal["trace", "debug", "info", "warn", "error", "fatal"] = "info"
    cooldown_default_ms: Count = Field(default=60000, ge=0)
    request_timeout_ms: Count = Field(default=30000, gt=0)
    connect_timeout_ms: Count = Field(default=5000, gt=0)
    payment_cooldown_ms: Count = Field(default=300000, ge=0)
    unhealthy_cooldown_ms: Count = Field(default=600000, ge=0)
    normalize_responses: Flag = False
    strict_models: Flag = False
    max_body_bytes: Count = Field(default=10 * 1024 * 1024, ge=1)
    access_log: Flag = False
    stream_idle_timeout_ms: Count = Field(default=20000, gt=0)
    first_token_timeout_ms: Count = Field(default=15000, gt=0)
    # Providers' answers are bounded. A body (and a stream before its first
    # token) over this many bytes, on the wire or after gzip/deflate, falls
    # through as `upstream_too_large`; it also caps the answer text a stream keeps.
    max_upstream_body_bytes: Count = Field(default=32 * 1024 * 1024, ge=1024)
    # One SSE event (or line) over this: before the first token it falls
    # through (`upstream_too_large`), after it the stream ends `stream_interrupted`.
    max_sse_event_bytes: Count = Field(default=8 * 1024 * 1024, ge=1024)
    # A stream still going this long after its first token ends `stream_too_long`.
    stream_max_duration_ms: Count = Field(default=30 * 60 * 1000, gt=0)
    db_path: str | None = None
    database_url: str | None = None
    mid_stream_failure_threshold: Count = Field(default=3, ge=1)
    mid_stream_cooldown_ms: Count = Field(default=120000, ge=0)
    mid_stream_cooldown_max_ms: Count = Field(default=1800000, ge=0)
    queue_mode: Flag = False
    queue_max_wait_ms: Count = Field(default=300000, ge=0)
    queue_max_size: Count = Field(default=100, ge=1)
    # After the first token: "error" ends the client's stream with an error
    # event; "continue" finishes the answer on an entry that supports prefill.
    mid_stream: Literal["error", "continue"] = "error"
    # Before spilling to a paid entry, wait this long for a free one known to recover.
    wait_before_paid_ms: Count = Field(default=0, ge=0)
    # A 503 whose earliest recovery is further away than this tells SDKs not to
    # retry (`x-should-retry: false`); a sooner one invites the retry that
    # lands after the recovery. OpenAI's SDKs otherwise wait up to minutes.
    client_retry_max_wait_ms: Count = Field(default=10000, ge=0)
    # The request log: where it lives is databaseUrl (or 429chain's dbPath).
    log_retention_days: Count = Field(default=30, ge=0)  # 0 keeps everything
    # Request records accepted and not yet committed, at most (queued, or in a
    # batch being retried while the database is down); more are dropped, counted.
    log_buffer_size: Count = Field(default=LOG_BUFFER_SIZE, ge=1)
    log_format: Literal["text", "json"] = "text"
    metrics_public: Flag = False  # serve /metrics without a key
    # Browser safety (docs/security.md). Host names the server answers to besides
    # the loopback ones: checked on every request when no keys are configured,
    # and only when this list is set otherwise (a server behind a load balancer).
    allowed_hosts: tuple[str, ...] = ()
    # Web origins whose pages may call this server (CORS); none by default.
    cors_origins: tuple[str, ...] = ()
    # Link-local / cloud-metadata addresses, networks or names a provider's
    # baseUrl may use all the same (refused by default: chain429.upstream.addresses).
    allow_private_upstreams: tuple[str, ...] = ()
    # Client connections (chain429/server/connections.py). Total deadlines, not reset by
    # each byte received: a client trickling bytes cannot hold a connection.
    client_header_timeout_ms: Count = Field(default=10000, gt=0)  # accept/first byte -> headers
    client_body_timeout_ms: Count = Field(default=60000, gt=0)  # end of headers -> whole body
    # An idle keep-alive connection closes after this. Clients should drop idle
    # connections sooner (httpx: 5 s), and so should a load balancer in front.
    keep_alive_timeout_ms: Count = Field(default=15000, gt=0)
    # Open client connections; more are answered 503 and closed at once.
    max_connections: Count = Field(default=1024, ge=1)

    # A list whose items are all commented out parses as null; that means "none".
    @field_validator(
        "api_keys",
        "admin_keys",
        "allowed_hosts",
        "cors_origins",
        "allow_private_upstreams",
        mode="before",
    )
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return () if value is None else value

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
    id: str = Field(min_length=1)
    name: str | None = None
    type: str
    api_key: str | None = None
    base_url: str | None = None
    timeout: Count | None = Field(default=None, ge=1)
    rate_limits: RateLimits | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    paid: Flag = False
    supports_prefill: Flag = False
    # Overrides the preset's quota scope: "model", "account", or "free"
    # (OpenRouter's: `:free` models share one account-wide quota).
    quota_scope: Literal["model", "account", "free"] | None = None

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

    @field_validator("headers", mode="before")
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
    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    rate_limits: RateLimits | None = None
    paid: Flag | None = None
    supports_prefill: Flag | None = None


class Chain(Model):
    name: str = Field(min_length=1)
    entries: tuple[ChainEntry, ...] = Field(min_length=1)


# Validation context key: the loader runs the cross-field checks itself, on
# the raw document, so it can report them with paths next to field errors.
_DEFER_CROSS_CHECKS = "chain429.defer_cross_checks"


class Config(Model):
    version: Literal[1] = 1
    settings: Settings = Field(default_factory=Settings)
    providers: tuple[Provider, ...] = ()
    chains: tuple[Chain, ...] = ()

    _providers_by_id: dict[str, Provider] = PrivateAttr(default_factory=dict)
    _chains_by_name: dict[str, Chain] = PrivateAttr(default_factory=dict)
    # Set by the loader: the variables the file references, and each resolved
    # value with the reference it came from (so answers can show the reference).
    _references: frozenset[str] = PrivateAttr(default_factory=frozenset)
    _resolved: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("settings", "providers", "chains", mode="before")
    @classmethod
    def _null_section(cls, value: Any, info: ValidationInfo) -> Any:
        # A section with every line commented out parses as null.
        if value is None:
            return {} if info.field_name == "settings" else ()
        return value

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

    def provider(self, id: str) -> Provider:
        return self._providers_by_id[id]

    def chain(self, name: str) -> Chain | None:
        return self._chains_by_name.get(name)

    @property
    def references(self) -> frozenset[str]:
        """The environment variables this config's file references."""
        return self._references

    @property
    def resolved_values(self) -> Mapping[str, str]:
        """Each value a `${VAR}` resolved to, mapped to its reference."""
        return self._resolved


def _items(value: Any) -> list[tuple[int, dict[str, Any]]]:
    if not isinstance(value, list | tuple):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def _hint(name: str, known: list[str], noun: str) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; {noun}: {', '.join(known)}" if known else f"; there are no {noun}"


def cross_check(data: Any) -> list[tuple[Loc, str]]:
    """References between sections, checked on loosely-typed data.

    Works on the raw document so these problems are reported in the same pass
    as type errors elsewhere; values of the wrong type are skipped here because
    the model validation already reports them.
    """
    if not isinstance(data, dict):
        return []
    problems: list[tuple[Loc, str]] = []
    provider_ids: dict[str, int] = {}
    for i, provider in _items(data.get("providers")):
        pid = provider.get("id")
        if not isinstance(pid, str):
            continue
        if pid in provider_ids:
            first = format_path(("providers", provider_ids[pid]))
            problems.append(
                (("providers", i, "id"), f"duplicate provider id {pid!r} (already used by {first})")
            )
        else:
            provider_ids[pid] = i
    chain_names: dict[str, int] = {}
    for i, chain in _items(data.get("chains")):
        name = chain.get("name")
        if isinstance(name, str):
            if name in chain_names:
                first = format_path(("chains", chain_names[name]))
                problems.append(
                    (
                        ("chains", i, "name"),
                        f"duplicate chain name {name!r} (already used by {first})",
                    )
                )
            else:
                chain_names[name] = i
        for j, entry in _items(chain.get("entries")):
            ref = entry.get("provider")
            if isinstance(ref, str) and ref and ref not in provider_ids:
                hint = _hint(ref, list(provider_ids), "providers")
                problems.append(
                    (("chains", i, "entries", j, "provider"), f"no provider with id {ref!r}{hint}")
                )
    settings = data.get("settings")
    settings = settings if isinstance(settings, dict) else {}
    key = "defaultChain" if "defaultChain" in settings else "default_chain"
    default = settings.get(key)
    if isinstance(default, str) and default not in chain_names:
        hint = _hint(default, list(chain_names), "chains")
        problems.append((("settings", key), f"no chain named {default!r}{hint}"))
    problems += _address_problems(data, settings)
    return problems


def _setting(settings: dict[str, Any], name: str) -> Any:
    """A setting from loosely-typed data, under its camelCase or snake_case key."""
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
    return settings.get(name, settings.get(snake))


def _address_problems(data: dict[str, Any], settings: dict[str, Any]) -> list[tuple[Loc, str]]:
    """Provider URLs that would hand a key to a metadata service; origins that open the server."""
    problems: list[tuple[Loc, str]] = []
    allowed = _setting(settings, "allowPrivateUpstreams")
    allowed = [a for a in allowed if isinstance(a, str)] if isinstance(allowed, list) else []
    for i, provider in _items(data.get("providers")):
        url = provider.get("baseUrl", provider.get("base_url"))
        if isinstance(url, str):
            reason = forbidden_upstream(host_of(url), allowed)
            if reason is not None:
                host = host_of(url)
                problems.append(
                    (
                        ("providers", i, "baseUrl"),
                        f"{host} {reason}; list it in settings.allowPrivateUpstreams "
                        "if this provider really lives there",
                    )
                )
    origins = _setting(settings, "corsOrigins")
    if isinstance(origins, list) and "*" in origins and not _setting(settings, "apiKeys"):
        problems.append(
            (
                ("settings", "corsOrigins"),
                "'*' lets every web page call this server; it needs settings.apiKeys",
            )
        )
    return problems
