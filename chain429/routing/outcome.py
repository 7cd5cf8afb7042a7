"""What an upstream answer means for the waterfall.

`classify` is a pure function of (status, headers, body, transport error):
every rule about what falls through to the next entry, what cools an entry
down and for how long lives here, so one table test covers all of it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from chain429.routing.endpoints import ROUTE, UPSTREAM_PATH, Endpoint, is_answer
from chain429.upstream import provider_json
from chain429.upstream.dialects import GENERIC, Dialect, read_body, read_headers
from chain429.upstream.times import parse_duration, parse_retry_after

T = TypeVar("T")


class Kind(StrEnum):
    SUCCESS = "success"
    RATE_LIMITED = "rate_limited"  # 429: come back when the provider says
    QUOTA_EXHAUSTED = "quota_exhausted"  # 402: out of credits
    UNHEALTHY = "unhealthy"  # 401/403/404 (bad key, unknown model), an oversized answer
    TRANSIENT = "transient"  # 5xx, timeouts, cut connections, junk bodies
    TOO_LARGE = "too_large"  # this request does not fit this entry; another may take it
    # The entry does not serve this endpoint (no legacy `/completions` for its
    # model): the next entry may, and its chat traffic is not to be cooled for it.
    UNSUPPORTED = "unsupported"
    CLIENT_ERROR = "client_error"  # the request itself is wrong: no entry will take it


class Scope(StrEnum):
    ENTRY = "entry"  # one (provider, model)
    PROVIDER = "provider"  # every entry of the provider: a bad key, an empty wallet


class BlockReason(StrEnum):
    """Why an entry is skipped while it is blocked; the trace shows `skip:<reason>`."""

    COOLDOWN = "cooldown"  # a 429 (or a rate-limit header said 0 left)
    QUOTA = "quota"  # a 402: out of credits
    UNHEALTHY = "unhealthy"  # a bad key, an unknown model, an oversized answer
    UNSTABLE = "unstable"  # streams keep dying mid-answer
    LIMITED = "limited"  # a request bucket is empty (header, body or configured limit)
    TOKENS = "tokens"  # a token bucket cannot take this request
    CONCURRENCY = "concurrency"  # maxConcurrent requests already in flight
    PROBING = "probing"  # one request is finding out whether the block is over
    BREAKER = "breaker"  # its circuit breaker is open, or its one probe is in flight
    # A budget: the request made maxAttemptsPerRequest calls (not a block in force), or
    # a paid entry's estimated cost does not fit a paid budget today (docs/spend.md);
    # the reason text says which.
    BUDGET = "budget"
    PAUSED = "paused"  # a person paused it (`chain429 entry pause`): skipped until resumed


# What each kind of failure blocks an entry for.
SKIP_REASON = {
    Kind.RATE_LIMITED: BlockReason.COOLDOWN,
    Kind.QUOTA_EXHAUSTED: BlockReason.QUOTA,
    Kind.UNHEALTHY: BlockReason.UNHEALTHY,
}


@dataclass(frozen=True, slots=True)
class CooldownPolicy:
    default_s: float = 60.0  # 429 with no hint at all
    payment_s: float = 300.0  # 402
    unhealthy_s: float = 600.0  # 401, 403, 404
    # A provider hint beyond this is treated as a typo or an epoch mix-up.
    max_s: float = 26 * 3600.0
    # A hint of "0s" would have us hammer the provider again at once.
    min_s: float = 1.0
    # Streams that die after the first token: after `mid_stream_threshold` in a
    # row the entry cools down, doubling from the base up to the max.
    mid_stream_threshold: int = 3
    mid_stream_base_s: float = 120.0
    mid_stream_max_s: float = 1800.0
    # An answer over the size limits (upstream_too_large): reading one costs
    # up to maxUpstreamBodyBytes of memory, so the entry rests a minute instead
    # of costing that again on every request; a one-off costs it only a minute.
    oversize_s: float = 60.0
    # The circuit breaker (settings.breaker): after `breaker_failures` transient
    # failures in a row an entry is skipped, doubling from the base up to the max.
    breaker_failures: int = 3  # 0: no breaker
    breaker_base_s: float = 5.0
    breaker_max_s: float = 60.0

    def breaker_open_s(self, failures_in_a_row: int) -> float | None:
        """How long an entry is skipped after this many transient failures in a row."""
        if self.breaker_failures <= 0:
            return None
        over = failures_in_a_row - self.breaker_failures
        if over < 0:
            return None
        return min(self.breaker_base_s * 2.0 ** min(over, 32), self.breaker_max_s)

    def mid_stream_cooldown_s(self, failures_in_a_row: int) -> float | None:
        """How long an entry rests after this many consecutive mid-stream failures."""
        over = failures_in_a_row - self.mid_stream_threshold
        if over < 0:
            return None
        return min(self.mid_stream_base_s * 2.0 ** min(over, 32), self.mid_stream_max_s)


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    token: str  # what the trace shows: "200", "429", "timeout", ...
    status: int | None = None
    until: float | None = None  # epoch seconds the entry stays blocked
    scope: Scope = Scope.ENTRY
    reason: str = ""
    source: str = "status"  # what set the cooldown: status, header, body, default

    @property
    def falls_through(self) -> bool:
        return self.kind not in (Kind.SUCCESS, Kind.CLIENT_ERROR)

    @property
    def retryable(self) -> bool:
        """Worth asking the same entry again (`retry.attempts`): a transient failure that
        a second call may not meet. Not a timeout: an entry that was slow is likely slow
        again, and a retry would double the wait. 4xx other than 408/409/429 and a
        context-length error are not transient, so never retried."""
        return self.kind is Kind.TRANSIENT and self.token not in _SLOW_TOKENS


@dataclass(frozen=True, slots=True)
class Tried(Generic[T]):
    """One entry asked: what it meant, what to hand on, and what the provider said."""

    outcome: Outcome
    result: T | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


# Transient failures that took a whole timeout: not retried on the same entry.
_SLOW_TOKENS = frozenset({"timeout", "first_token_timeout"})

# Transport failures, named by the upstream module; all transient.
TRANSPORT_ERRORS = ("timeout", "connect_error", "connection_reset", "upstream_error")
# An answer over maxUpstreamBodyBytes or maxSseEventBytes (also named by upstream).
TOO_LARGE_ANSWER = "upstream_too_large"


def classify(
    status: int | None,
    headers: Mapping[str, str],
    body: bytes,
    error: str | None,
    *,
    now: float,
    policy: CooldownPolicy,
    dialect: Dialect = GENERIC,
    endpoint: Endpoint = Endpoint.CHAT,
) -> Outcome:
    """Classify one upstream answer to a request on `endpoint`. `headers` must be
    case-insensitive (aiohttp's)."""
    if error == TOO_LARGE_ANSWER:
        return Outcome(
            Kind.UNHEALTHY,
            error,
            status,
            now + policy.oversize_s,
            Scope.ENTRY,
            "answer over maxUpstreamBodyBytes or maxSseEventBytes",
            "default",
        )
    if error is not None or status is None:
        kind = error or "upstream_error"
        return Outcome(Kind.TRANSIENT, kind, reason=kind.replace("_", " "))
    token = str(status)
    if 200 <= status < 300:
        if is_answer(endpoint, provider_json.parse(body)):  # None for junk, too deep a nesting
            return Outcome(Kind.SUCCESS, token, status)
        return Outcome(
            Kind.TRANSIENT, "invalid_body", status, reason=f"not an answer of {ROUTE[endpoint]}"
        )
    if status == 429:
        until, source = rate_limit_until(headers, body, now=now, policy=policy)
        return Outcome(
            Kind.RATE_LIMITED,
            token,
            status,
            until,
            Scope.ENTRY,
            f"rate limited ({source})",
            _HINT_SOURCE[source],
        )
    if status == 402:
        until = now + policy.payment_s
        return Outcome(
            Kind.QUOTA_EXHAUSTED, token, status, until, Scope.PROVIDER, "payment required"
        )
    if status in (401, 403):
        until = now + policy.unhealthy_s
        return Outcome(Kind.UNHEALTHY, token, status, until, Scope.PROVIDER, "rejected the API key")
    if status in (404, 405) and endpoint is Endpoint.COMPLETIONS:
        # Many providers serve chat only (Groq, Gemini, OpenAI's chat models): the
        # entry is fine, and the chat chain it belongs to still needs it, so no
        # cooldown; the next entry may have the legacy route.
        return Outcome(
            Kind.UNSUPPORTED,
            token,
            status,
            reason=f"no {UPSTREAM_PATH[endpoint]} for this model on this provider",
        )
    if status == 404:
        until = now + policy.unhealthy_s
        return Outcome(Kind.UNHEALTHY, token, status, until, Scope.ENTRY, "unknown model or path")
    if status == 413 or (status == 400 and _is_context_length_error(body)):
        return Outcome(Kind.TOO_LARGE, token, status, reason="request too large for this model")
    if status in (400, 422):
        return Outcome(Kind.CLIENT_ERROR, token, status, reason="the request was rejected")
    # 408, 409, 5xx and anything unexpected: the provider's trouble, not the request's.
    return Outcome(Kind.TRANSIENT, token, status, reason=f"upstream answered {status}")


_HINT_SOURCE = {
    "retry-after": "header",
    "reset headers": "header",
    "body hint": "body",
    "default cooldown": "default",
}


def classify_stream_error(error: object, *, now: float, policy: CooldownPolicy) -> Outcome:
    """An error event inside a stream, before its first token (`data: {"error": ...}`).

    OpenRouter, for one, reports a provider's 429 this way inside an HTTP 200.
    """
    text = provider_json.encode(error) or b""
    code = error.get("code") if isinstance(error, dict) else None
    if code in (429, "429", "rate_limit_exceeded") or b"rate limit" in text.lower():
        until, source = rate_limit_until({}, text, now=now, policy=policy)
        return Outcome(
            Kind.RATE_LIMITED,
            "429",
            None,
            until,
            Scope.ENTRY,
            f"rate limited in stream ({source})",
            _HINT_SOURCE[source],
        )
    return Outcome(Kind.TRANSIENT, "stream_error", reason="error event in the stream")


def _is_context_length_error(body: bytes) -> bool:
    head = body[:4096].lower()
    return b"context_length_exceeded" in head or b"maximum context length" in head


# -- when may we ask again ---------------------------------------------------

_BODY_HINTS = (
    # Groq / OpenAI: "Please try again in 7m12.3s."; Gemini: "Please retry in 52.45s."
    re.compile(rb"(?:try again|retry) in ((?:\d+(?:\.\d+)?(?:ms|h|m|s))+)", re.IGNORECASE),
    # Gemini's error.details[].retryDelay: "52.45s"
    re.compile(rb'"retryDelay"\s*:\s*"((?:\d+(?:\.\d+)?(?:ms|h|m|s))+)"'),
)


def _reset_from_readings(
    dialect: Dialect, headers: Mapping[str, str], body: bytes, now: float
) -> tuple[float, str] | None:
    """The reset the provider's own quota readings point at, read in its dialect.

    The quota that said no (remaining 0) wins, the latest of them; otherwise the
    soonest reset is the best guess.
    """
    readings = read_headers(dialect, headers, now=now) + read_body(dialect, body, now=now)
    timed = [r for r in readings if r.reset_at is not None and r.reset_at > now]
    exhausted = [r for r in timed if r.remaining is not None and r.remaining <= 0]
    if exhausted:
        chosen = max(exhausted, key=lambda r: r.reset_at or 0.0)
    elif timed:
        chosen = min(timed, key=lambda r: r.reset_at or 0.0)
    else:
        return None
    assert chosen.reset_at is not None
    return chosen.reset_at, "reset headers" if chosen.source == "header" else "body hint"


def rate_limit_until(
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    policy: CooldownPolicy,
    dialect: Dialect = GENERIC,
) -> tuple[float, str]:
    """When a 429'd entry may be asked again, and which hint said so."""
    until: float | None = None
    source = "default cooldown"
    retry_after = headers.get("retry-after")
    if retry_after:
        until, source = parse_retry_after(retry_after, now=now), "retry-after"
    if until is None and (found := _reset_from_readings(dialect, headers, body, now)):
        until, source = found
    if until is None:
        for pattern in _BODY_HINTS:
            match = pattern.search(body[:8192])
            if match:
                seconds = parse_duration(match.group(1).decode())
                if seconds is not None:
                    until, source = now + seconds, "body hint"
                    break
    if until is None:
        until, source = now + policy.default_s, "default cooldown"
    return min(max(until, now + policy.min_s), now + policy.max_s), source
