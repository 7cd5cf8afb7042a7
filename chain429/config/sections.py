"""The config's base model and field types, and its small nested sections.

Every section shares one base (`Model`: frozen, strict about unknown keys,
camelCase) and the same leniency rules for numbers and flags. The sections
that nest inside others live here too: `rateLimits` (on a provider or an
entry), and the failover sections `retry` (in settings, on a provider, on an
entry) and `breaker` (in settings). chain429.config.model builds the file's
top-level sections from them.

`price` (on a provider or an entry) says what a call costs, for the request
log's spend and the paid budget (docs/spend.md).

`retry` and `breaker` decide how hard chain429 leans on one entry before it
moves on. Their defaults keep the plain waterfall (move on at once), which is
right for a chain of equivalent free tiers; a chain whose order is a
preference sets `retry` to stay on its first entry through a blip
(docs/config.md#failover-retry-breaker).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "Breaker",
    "Count",
    "Flag",
    "Model",
    "PositiveCount",
    "Price",
    "RateLimits",
    "Retry",
    "Usd",
    "listed",
    "resolve_retry",
]


def listed(names: Iterable[str]) -> str:
    """`a`, `b`, `c`: names as a description lists them."""
    return ", ".join(f"`{name}`" for name in names)


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

# A Count of at least 1, for optional limits. `Field(ge=1)` on `Count | None`
# would bind to the union, where JSON Schema has no word for it; on the number
# (inside the validator) it reads `minimum: 1` in the schema.
PositiveCount = Annotated[int, Field(ge=1), BeforeValidator(_no_bool)]


def _no_bool_amount(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected an amount of US dollars (got {str(value).lower()})")
    return value


# An amount of US dollars: a number from 0 (never infinite or NaN: a budget
# must be a budget); `true` is a typo, not $1.
Usd = Annotated[float, Field(ge=0, allow_inf_nan=False), BeforeValidator(_no_bool_amount)]


class Model(BaseModel):
    """Frozen (a config is an immutable snapshot), strict about unknown keys, camelCase."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, alias_generator=to_camel
    )


class RateLimits(Model):
    """Limits chain429 counts itself, for providers whose answers carry no rate-limit headers
    (docs/ratelimits.md). They are counted per quota bucket (see `quotaScope`)."""

    requests_per_minute: PositiveCount | None = Field(
        default=None, description="Requests per minute, in a sliding 60 s window."
    )
    tokens_per_minute: PositiveCount | None = Field(
        default=None,
        description="Tokens per minute, counted from real usage once the answer is in.",
    )
    requests_per_day: PositiveCount | None = Field(
        default=None, description="Requests per calendar day (the provider's day boundary)."
    )
    tokens_per_day: PositiveCount | None = Field(
        default=None,
        description="Tokens per calendar day (the provider's day boundary), counted from real "
        "usage.",
    )
    concurrent_requests: PositiveCount | None = Field(
        default=None,
        description="Requests in flight at once; a slot is freed on completion, error and "
        "client cancel.",
    )


# Providers' price lists count per million tokens.
TOKENS_PER_PRICE_UNIT = 1_000_000


class Price(Model):
    """What calls to a provider or an entry cost, in US dollars per million tokens, as
    providers' price lists say it (docs/spend.md)."""

    input_per_m_tok: Usd = Field(
        description="US dollars per million prompt (input) tokens, e.g. `0.15`."
    )
    output_per_m_tok: Usd = Field(
        description="US dollars per million completion (output) tokens, e.g. `0.60`."
    )

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """US dollars for a call of these tokens: the one formula of a request's cost."""
        return (
            prompt_tokens * self.input_per_m_tok + completion_tokens * self.output_per_m_tok
        ) / TOKENS_PER_PRICE_UNIT


# Bounds on the number itself (inside the Optional), as PositiveCount does.
_Attempts = Annotated[int, Field(ge=0, le=3), BeforeValidator(_no_bool)]
_ShortWait = Annotated[int, Field(ge=0, le=60000), BeforeValidator(_no_bool)]


class Retry(Model):
    """Same-entry retries (`settings.retry`, a provider's `retry`, a chain entry's `retry`).

    A key left out inherits: an entry's from its provider's, a provider's from
    `settings.retry`, and that from the defaults (`0`: no retries, no waits).
    """

    attempts: _Attempts | None = Field(
        default=None,
        description="Extra calls to the same entry after a transient failure (a 5xx, 408, "
        "409, a connection refused or reset before the headers, a stream that fails before "
        "its first token), each after a jittered 100-400 ms backoff (doubling per further "
        "retry), before falling through. Timeouts are not retried (a slow entry stays slow), "
        "nor any other 4xx, nor a context-length error. Unset: inherited; at the top, `0`.",
    )
    short_wait_ms: _ShortWait | None = Field(
        default=None,
        description="A 429 (or a cooldown from one) whose recovery (`Retry-After`, a reset "
        "header, a body hint) is at most this many milliseconds away is waited for, and the "
        "same entry asked again, instead of falling through; once per entry per request. "
        "Unset: inherited; at the top, `0` (never wait).",
    )


def resolve_retry(*levels: Retry | None) -> tuple[int, int]:
    """(attempts, shortWaitMs) for an entry: the first level (entry, provider, settings)
    that sets each key wins; none does: 0."""
    attempts = next((r.attempts for r in levels if r and r.attempts is not None), 0)
    short_wait = next((r.short_wait_ms for r in levels if r and r.short_wait_ms is not None), 0)
    return attempts, short_wait


class Breaker(Model):
    """The circuit breaker (`settings.breaker`): stop calling an entry that keeps failing."""

    failures: Count = Field(
        default=3,
        ge=0,
        description="Transient failures in a row (5xx, timeouts, cut connections, slow first "
        "tokens) after which an entry is skipped (`skip:breaker`) for `baseMs`; each further "
        "failure doubles that, up to `maxMs`. Then one request probes it while the others "
        "keep skipping; any answer that is not a transient failure closes it. `0`: no breaker.",
    )
    base_ms: Count = Field(
        default=5000,
        gt=0,
        description="Milliseconds an entry is skipped when its breaker first opens.",
    )
    max_ms: Count = Field(
        default=60000,
        gt=0,
        description="Longest time an open breaker skips its entry, in milliseconds.",
    )
