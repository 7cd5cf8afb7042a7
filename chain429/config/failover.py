"""The failover sections of the config: same-entry retries and the circuit breaker.

Both are about how hard chain429 leans on one entry before it moves on. The
defaults keep the plain waterfall (move on at once), which is right for a
chain of equivalent free tiers; a chain whose order is a preference sets
`retry` to stay on its first entry through a blip (docs/failover.md).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from chain429.config.fields import Count, Model, reject_bool

__all__ = ["Breaker", "Retry", "resolve_retry"]

# Bounds on the number itself (inside the Optional), as PositiveCount does.
_Attempts = Annotated[int, Field(ge=0, le=3), BeforeValidator(reject_bool)]
_ShortWait = Annotated[int, Field(ge=0, le=60000), BeforeValidator(reject_bool)]


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
