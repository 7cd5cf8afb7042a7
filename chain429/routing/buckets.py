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

A client's own limits (`clients:`) are counted by a bucket too, one per client,
whose day is the server's (`settings.timeZone`: `zone`) and which never hears
from a provider.

Everything is synchronous and takes `now`: the state store calls it without
awaiting in between, which is what makes check-and-reserve atomic.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from chain429.config.model import RateLimits
from chain429.routing.outcome import BlockReason
from chain429.upstream.dialects import Dialect, Reading, next_day_boundary
from chain429.upstream.presets import dialect_named
from chain429.upstream.times import next_midnight


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a bucket says no right now, and until when."""

    reason: BlockReason  # LIMITED (requests), TOKENS or CONCURRENCY
    until: float
    source: str  # "header", "body" or "manual"
    detail: str


@dataclass(slots=True)
class _Seen:
    reading: Reading
    observed_at: float
    reserved: int = 0  # requests we sent since this reading


# Why a bucket says no, in words (the memory and the Redis store say it alike).


def requests_used_up(window: str, limit: object) -> str:
    return f"{window} request quota used up ({limit} allowed)"


def tokens_left(remaining: object, window: str, need: int) -> str:
    return f"{remaining} {window} tokens left, request needs about {need}"


def in_flight_full(in_flight: object, limit: object) -> str:
    return f"{in_flight} requests in flight (concurrentRequests {limit})"


def limit_reached(name: str, limit: object) -> str:
    return f"{name} {limit} reached"


def tokens_per_minute_used(limit: object, used: object, need: object) -> str:
    return f"tokensPerMinute {limit}: {used} used, request needs about {need}"


def tokens_per_day_used(limit: object, used: object) -> str:
    return f"tokensPerDay {limit}: {used} used"


# A concurrency slot frees when a request ends, which we cannot predict; queued
# requests are woken by that end, so this is only a fallback.
CONCURRENCY_RETRY_S = 5.0


@dataclass
class Bucket:
    key: str
    dialect: Dialect
    readings: dict[tuple[str, str], _Seen] = field(default_factory=dict)
    minute_requests: deque[float] = field(default_factory=deque)
    minute_tokens: deque[tuple[float, int]] = field(default_factory=deque)
    day_requests: int = 0
    day_tokens: int = 0
    day_ends_at: float = 0.0
    in_flight: int = 0
    strikes: int = 0  # 429s in a row, for escalating cooldowns
    zone: tzinfo | None = None  # whose midnight ends the day; None: the provider's
    # Bumped by every change but the passing of time: a refusal given at one
    # version holds, unchanged, until its `until` while the version stays
    # (the router's known skips rely on it; see chain429.routing.known_skips).
    version: int = 0

    def next_day(self, now: float) -> float:
        """When this bucket's day ends: midnight in `zone`, else the provider's."""
        if self.zone is not None:
            return next_midnight(now, self.zone)
        return next_day_boundary(self.dialect, now)

    # -- asking ------------------------------------------------------------

    def refusal(self, limits: RateLimits | None, need_tokens: int, now: float) -> Refusal | None:
        self._expire(now)
        for (kind, window), seen in self.readings.items():
            reading = seen.reading
            if reading.remaining is None or reading.reset_at is None or reading.reset_at <= now:
                continue
            if kind == "requests" and reading.remaining - seen.reserved <= 0:
                return Refusal(
                    BlockReason.LIMITED,
                    reading.reset_at,
                    reading.source,
                    requests_used_up(window, reading.limit),
                )
            if kind == "tokens" and reading.remaining < need_tokens:
                return Refusal(
                    BlockReason.TOKENS,
                    reading.reset_at,
                    reading.source,
                    tokens_left(reading.remaining, window, need_tokens),
                )
        if limits is not None:
            return self._manual_refusal(limits, need_tokens, now)
        return None

    def _manual_refusal(self, limits: RateLimits, need: int, now: float) -> Refusal | None:
        if limits.concurrent_requests and self.in_flight >= limits.concurrent_requests:
            return Refusal(
                BlockReason.CONCURRENCY,
                now + CONCURRENCY_RETRY_S,
                "manual",
                in_flight_full(self.in_flight, limits.concurrent_requests),
            )
        rpm = limits.requests_per_minute
        if rpm and len(self.minute_requests) >= rpm:
            return Refusal(
                BlockReason.LIMITED,
                self.minute_requests[0] + 60.0,
                "manual",
                limit_reached("requestsPerMinute", rpm),
            )
        tpm = limits.tokens_per_minute
        if tpm and self.minute_tokens:
            used = sum(tokens for _, tokens in self.minute_tokens)
            if used + need > tpm:
                return Refusal(
                    BlockReason.TOKENS,
                    self.minute_tokens[0][0] + 60.0,
                    "manual",
                    tokens_per_minute_used(tpm, used, need),
                )
        if limits.requests_per_day and self.day_requests >= limits.requests_per_day:
            return Refusal(
                BlockReason.LIMITED,
                self.day_ends_at,
                "manual",
                limit_reached("requestsPerDay", limits.requests_per_day),
            )
        tpd = limits.tokens_per_day
        if tpd and self.day_tokens + need > tpd:
            return Refusal(
                BlockReason.TOKENS,
                self.day_ends_at,
                "manual",
                tokens_per_day_used(tpd, self.day_tokens),
            )
        return None

    def reserve(self, need_tokens: int, now: float, limits: RateLimits | None = None) -> None:
        self.version += 1
        self.in_flight += 1
        # The sliding windows cost memory and time per request: keep them only
        # for the limits that need them.
        if limits is not None and limits.requests_per_minute:
            self.minute_requests.append(now)
        if limits is not None and limits.tokens_per_minute:
            self.minute_tokens.append((now, need_tokens))
        self.day_requests += 1
        self.day_tokens += need_tokens
        for seen in self.readings.values():
            seen.reserved += 1

    def finish(self, reserved_at: float, need_tokens: int, used_tokens: int | None) -> None:
        """A request ended: free its slot and count the tokens it really used."""
        self.version += 1
        self.in_flight = max(0, self.in_flight - 1)
        if used_tokens is None or used_tokens == need_tokens:
            return
        # Swap the estimate for the real count, in the window it was counted in.
        # Search from the newest end: only requests started since this one lie
        # between, about as many as run concurrently.
        for index in range(len(self.minute_tokens) - 1, -1, -1):
            at, tokens = self.minute_tokens[index]
            if at < reserved_at:
                break
            if at == reserved_at and tokens == need_tokens:
                self.minute_tokens[index] = (at, used_tokens)
                break
        if reserved_at < self.day_ends_at:
            self.day_tokens = max(0, self.day_tokens + used_tokens - need_tokens)

    # -- learning ----------------------------------------------------------

    def observe(self, readings: list[Reading], now: float) -> None:
        if readings:
            self.version += 1
        for reading in readings:
            self.readings[(reading.kind, reading.window)] = _Seen(reading, now)

    def _expire(self, now: float) -> None:
        while self.minute_requests and self.minute_requests[0] <= now - 60.0:
            self.minute_requests.popleft()
        while self.minute_tokens and self.minute_tokens[0][0] <= now - 60.0:
            self.minute_tokens.popleft()
        if now >= self.day_ends_at:
            self.day_requests = self.day_tokens = 0
            self.day_ends_at = self.next_day(now)

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

    # -- persisting ----------------------------------------------------------
    #
    # What survives a restart (chain429.requestlog.persist saves it): readings whose reset
    # is still ahead, the provider day's counters, the strike count, and the
    # per-minute windows. The windows are saved grouped by second (newest time
    # of the group, summed count): at most 60 pairs however busy the bucket,
    # exact in count and at most a second late, so a restart inside the minute
    # neither forgets requestsPerMinute nor saves a timestamp per request.
    # In-flight counts are not saved: a restarted process has nothing in flight.

    def to_dict(self, now: float) -> dict[str, Any] | None:
        """The live part of this bucket as JSON-able data; None when nothing is worth keeping.

        Reads only: expiry is applied to the copy, the bucket itself is left as is.
        """
        readings = [
            {
                "kind": seen.reading.kind,
                "window": seen.reading.window,
                "limit": seen.reading.limit,
                "remaining": seen.reading.remaining,
                "reset_at": seen.reading.reset_at,
                "source": seen.reading.source,
                "observed_at": seen.observed_at,
                "reserved": seen.reserved,
            }
            for seen in self.readings.values()
            # A reading with no reset cannot be known to still hold after a restart.
            if seen.reading.reset_at is not None and seen.reading.reset_at > now
        ]
        minute_requests = _per_second((at, 1) for at in self.minute_requests if at > now - 60.0)
        minute_tokens = _per_second((at, n) for at, n in self.minute_tokens if at > now - 60.0)
        today = self.day_ends_at > now and (self.day_requests > 0 or self.day_tokens > 0)
        if not (readings or minute_requests or minute_tokens or today or self.strikes > 0):
            return None
        data: dict[str, Any] = {"key": self.key, "dialect": self.dialect.name}
        if readings:
            data["readings"] = readings
        if minute_requests:
            data["minute_requests"] = minute_requests
        if minute_tokens:
            data["minute_tokens"] = minute_tokens
        if today:
            data["day_requests"] = self.day_requests
            data["day_tokens"] = self.day_tokens
            data["day_ends_at"] = self.day_ends_at
        if self.strikes > 0:
            data["strikes"] = self.strikes
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], now: float) -> Bucket:
        """A bucket from `to_dict` data, without what expired since; raises on malformed data."""
        bucket = cls(str(data["key"]), dialect_named(str(data["dialect"])))
        for item in data.get("readings", ()):
            kind, window = item["kind"], item["window"]
            if kind not in ("requests", "tokens") or window not in ("minute", "hour", "day"):
                raise ValueError(f"unknown quota {kind}/{window}")
            reset_at = float(item["reset_at"])
            if reset_at <= now:
                continue
            reading = Reading(
                kind,
                window,
                _optional_int(item.get("limit")),
                _optional_int(item.get("remaining")),
                reset_at,
                str(item.get("source", "header")),
            )
            seen = _Seen(reading, float(item["observed_at"]), int(item.get("reserved", 0)))
            bucket.readings[(kind, window)] = seen
        for at, count in data.get("minute_requests", ()):
            if float(at) > now - 60.0:
                bucket.minute_requests.extend([float(at)] * max(0, int(count)))
        for at, tokens in data.get("minute_tokens", ()):
            if float(at) > now - 60.0:
                bucket.minute_tokens.append((float(at), int(tokens)))
        day_ends_at = float(data.get("day_ends_at", 0.0))
        if day_ends_at > now:
            bucket.day_ends_at = day_ends_at
            bucket.day_requests = max(0, int(data.get("day_requests", 0)))
            bucket.day_tokens = max(0, int(data.get("day_tokens", 0)))
        bucket.strikes = max(0, int(data.get("strikes", 0)))
        return bucket

    def absorb(self, other: Bucket) -> None:
        """Merge restored state into this live bucket, keeping whichever knows more.

        Start-up restores into an empty store, where this is never needed; it
        makes a late import safe: nothing this process counted is forgotten.
        """
        self.version += 1
        for key, seen in other.readings.items():
            mine = self.readings.get(key)
            if mine is None or seen.observed_at > mine.observed_at:
                self.readings[key] = seen
        self.minute_requests = deque(sorted([*self.minute_requests, *other.minute_requests]))
        self.minute_tokens = deque(sorted([*self.minute_tokens, *other.minute_tokens]))
        if other.day_ends_at > self.day_ends_at:
            self.day_ends_at = other.day_ends_at
            self.day_requests, self.day_tokens = other.day_requests, other.day_tokens
        elif other.day_ends_at == self.day_ends_at:
            self.day_requests = max(self.day_requests, other.day_requests)
            self.day_tokens = max(self.day_tokens, other.day_tokens)
        self.strikes = max(self.strikes, other.strikes)


def _per_second(events: Iterable[tuple[float, int]]) -> list[list[float | int]]:
    """[[newest time, summed count], ...] per whole second, oldest first."""
    groups: dict[int, list[float | int]] = {}
    for at, count in events:
        group = groups.get(int(at))
        if group is None:
            groups[int(at)] = [at, count]
        else:
            group[0] = max(group[0], at)
            group[1] += count
    return [groups[second] for second in sorted(groups)]


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
