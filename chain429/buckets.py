"""Quota buckets: what one provider quota has left, from its headers and our own counts.

A bucket is a quota as the provider enforces it: one model of an account
(Groq, Cerebras), or the whole account (OpenRouter's `:free` models share
one). Entries that share a bucket share its fate. A bucket knows two things:

- what the provider last said (`Reading`s from headers or 429 bodies), less
  what we reserved since: so concurrent requests cannot both take the last
  unit the provider reported;
- what we counted ourselves against configured `rateLimits`: sliding windows
  for per-minute limits (no windows that start at boot), calendar days for
  per-day limits (the provider's day), and requests in flight.

Everything is synchronous and takes `now`: the state store calls it without
awaiting in between, which is what makes check-and-reserve atomic.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from chain429.config import RateLimits
from chain429.dialects import Reading, next_day_boundary


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a bucket says no right now, and until when."""

    reason: str  # "limited" (requests), "tokens", "concurrency"
    until: float
    source: str  # "header", "body" or "manual"
    detail: str


@dataclass(slots=True)
class _Seen:
    reading: Reading
    observed_at: float
    reserved: int = 0  # requests we sent since this reading


# A concurrency slot frees when a request ends, which we cannot predict: ask again soon.
_CONCURRENCY_RETRY_S = 0.25


@dataclass
class Bucket:
    key: str
    dialect: str
    readings: dict[tuple[str, str], _Seen] = field(default_factory=dict)
    minute_requests: deque[float] = field(default_factory=deque)
    minute_tokens: deque[tuple[float, int]] = field(default_factory=deque)
    day_requests: int = 0
    day_tokens: int = 0
    day_ends_at: float = 0.0
    in_flight: int = 0
    strikes: int = 0  # 429s in a row, for escalating cooldowns

    # -- asking ------------------------------------------------------------

    def refusal(self, limits: RateLimits | None, need_tokens: int, now: float) -> Refusal | None:
        self._expire(now)
        for (kind, window), seen in self.readings.items():
            reading = seen.reading
            if reading.remaining is None or reading.reset_at is None or reading.reset_at <= now:
                continue
            if kind == "requests" and reading.remaining - seen.reserved <= 0:
                return Refusal(
                    "limited",
                    reading.reset_at,
                    reading.source,
                    f"{window} request quota used up ({reading.limit} allowed)",
                )
            if kind == "tokens" and reading.remaining < need_tokens:
                return Refusal(
                    "tokens",
                    reading.reset_at,
                    reading.source,
                    f"{reading.remaining} {window} tokens left, request needs about {need_tokens}",
                )
        if limits is not None:
            return self._manual_refusal(limits, need_tokens, now)
        return None

    def _manual_refusal(self, limits: RateLimits, need: int, now: float) -> Refusal | None:
        if limits.concurrent_requests and self.in_flight >= limits.concurrent_requests:
            return Refusal(
                "concurrency",
                now + _CONCURRENCY_RETRY_S,
                "manual",
                f"{self.in_flight} requests in flight "
                f"(concurrentRequests {limits.concurrent_requests})",
            )
        rpm = limits.requests_per_minute
        if rpm and len(self.minute_requests) >= rpm:
            return Refusal(
                "limited",
                self.minute_requests[0] + 60.0,
                "manual",
                f"requestsPerMinute {rpm} reached",
            )
        tpm = limits.tokens_per_minute
        if tpm and self.minute_tokens:
            used = sum(tokens for _, tokens in self.minute_tokens)
            if used + need > tpm:
                return Refusal(
                    "tokens",
                    self.minute_tokens[0][0] + 60.0,
                    "manual",
                    f"tokensPerMinute {tpm}: {used} used, request needs about {need}",
                )
        if limits.requests_per_day and self.day_requests >= limits.requests_per_day:
            return Refusal(
                "limited",
                self.day_ends_at,
                "manual",
                f"requestsPerDay {limits.requests_per_day} reached",
            )
        tpd = limits.tokens_per_day
        if tpd and self.day_tokens + need > tpd:
            return Refusal(
                "tokens", self.day_ends_at, "manual", f"tokensPerDay {tpd}: {self.day_tokens} used"
            )
        return None

    def reserve(self, need_tokens: int, now: float) -> None:
        self.in_flight += 1
        self.minute_requests.append(now)
        self.minute_tokens.append((now, need_tokens))
        self.day_requests += 1
        self.day_tokens += need_tokens
        for seen in self.readings.values():
            seen.reserved += 1

    def finish(self, reserved_at: float, need_tokens: int, used_tokens: int | None) -> None:
        """A request ended: free its slot and count the tokens it really used."""
        self.in_flight = max(0, self.in_flight - 1)
        if used_tokens is None or used_tokens == need_tokens:
            return
        # Swap the estimate for the real count, in the window it was counted in.
        for index, (at, tokens) in enumerate(self.minute_tokens):
            if at == reserved_at and tokens == need_tokens:
                self.minute_tokens[index] = (at, used_tokens)
                break
        if reserved_at < self.day_ends_at:
            self.day_tokens = max(0, self.day_tokens + used_tokens - need_tokens)

    # -- learning ----------------------------------------------------------

    def observe(self, readings: list[Reading], now: float) -> None:
        for reading in readings:
            self.readings[(reading.kind, reading.window)] = _Seen(reading, now)

    def _expire(self, now: float) -> None:
        while self.minute_requests and self.minute_requests[0] <= now - 60.0:
            self.minute_requests.popleft()
        while self.minute_tokens and self.minute_tokens[0][0] <= now - 60.0:
            self.minute_tokens.popleft()
        if now >= self.day_ends_at:
            self.day_requests = self.day_tokens = 0
            self.day_ends_at = next_day_boundary(self.dialect, now)

    def describe(self, limits: RateLimits | None, now: float) -> list[dict[str, object]]:
        """Each quota this bucket knows: limit, remaining, reset, source."""
        self._expire(now)
        quotas: list[dict[str, object]] = []
        for (kind, window), seen in sorted(self.readings.items()):
            reading = seen.reading
            fresh = reading.reset_at is None or reading.reset_at > now
            remaining = reading.remaining
            if remaining is not None and kind == "requests":
                remaining = max(0, remaining - seen.reserved)
            quotas.append(
                {
                    "kind": kind,
                    "window": window,
                    "limit": reading.limit,
                    "remaining": remaining if fresh else reading.limit,
                    "reset_at": reading.reset_at if fresh else None,
                    "source": reading.source,
                }
            )
        if limits is not None:
            manual = (
                (
                    "requests",
                    "minute",
                    limits.requests_per_minute,
                    len(self.minute_requests),
                    self.minute_requests[0] + 60.0 if self.minute_requests else None,
                ),
                (
                    "tokens",
                    "minute",
                    limits.tokens_per_minute,
                    sum(t for _, t in self.minute_tokens),
                    self.minute_tokens[0][0] + 60.0 if self.minute_tokens else None,
                ),
                ("requests", "day", limits.requests_per_day, self.day_requests, self.day_ends_at),
                ("tokens", "day", limits.tokens_per_day, self.day_tokens, self.day_ends_at),
            )
            for kind, window, limit, used, reset_at in manual:
                if limit:
                    quotas.append(
                        {
                            "kind": kind,
                            "window": window,
                            "limit": limit,
                            "remaining": max(0, limit - used),
                            "reset_at": reset_at,
                            "source": "manual",
                        }
                    )
        return quotas
