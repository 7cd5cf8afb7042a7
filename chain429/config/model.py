"""The config's model: frozen pydantic classes of every section.

The schema is a superset of 429chain's (camelCase keys, `version: 1`), so a
429chain config loads unchanged. Validation that spans sections (a chain
naming a provider, the default chain, provider addresses) is
`chain429.config.cross_checks`, which the loader (`chain429.config.loader`)
runs on the raw document so its problems come with lines like every other.
The base class, the field types and the small nested sections (`rateLimits`,
`retry`, `breaker`, `price`) are chain429.config.sections', and `settings` is
chain429.config.settings'; they are re-exported here.

Each field's `description` is its one explanation, written for users: the
tables of docs/config.md (docs/generate_config_docs.py), the file's JSON
Schema that editors show (`chain429 config schema`, chain429.config.schema)
and the admin API's /openapi.json are all made from it.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    Flag,
    Model,
    PositiveCount,
    Price,
    RateLimits,
    Retry,
    listed,
)
from chain429.config.settings import LOG_BUFFER_SIZE, Settings
from chain429.upstream.presets import PRESETS, PROVIDER_TYPES

__all__ = [
    "CHAIN_KINDS",
    "LOG_BUFFER_SIZE",
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


# What a chain serves: chat models (`/v1/chat/completions` and the legacy
# `/v1/completions`) or embedding models (`/v1/embeddings`).
ChainKind = Literal["chat", "embeddings"]
CHAIN_KINDS: tuple[ChainKind, ...] = get_args(ChainKind)


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
        description=f"A preset: {listed(PROVIDER_TYPES)}. It says the default `baseUrl`, how "
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
        + listed(t for t in PROVIDER_TYPES if PRESETS[t].default_base_url is None)
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
        "the other kind's route is a 404 `wrong_endpoint` (docs/api.md#endpoints-and-chain-kinds).",
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
        "name. Listed in `/v1/models`; answers say `X-429chain-Route: alias` and "
        "`X-429chain-Alias: <alias>`.",
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
