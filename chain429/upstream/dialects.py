"""Rate-limit dialects: what each provider's headers and 429 bodies say about its quotas.

Every provider spells its quotas differently (PROVIDERS.md has the facts):
the same `x-ratelimit-*-requests` name is a per-minute quota at OpenAI and a
per-day one at Groq, OpenRouter sends epoch milliseconds, Gemini sends nothing
but a JSON body. This module turns all of them into `Reading`s, and answers the
one question the cooldown logic cannot answer from a duration alone: is it the
*daily* quota that is gone, so the entry should rest until the provider's next
day instead of re-asking (and burning requests on 429s) every minute.

Everything here is pure: no I/O and no clock; callers pass `now` (epoch seconds).
Junk values are skipped, never raised on: a provider's typo must not take a
request down with it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta, timezone, tzinfo
from functools import cache
from typing import Any, Literal, cast

from chain429.upstream import provider_json
from chain429.upstream.times import next_midnight, parse_duration, parse_reset

Window = Literal["minute", "hour", "day"]
Kind = Literal["requests", "tokens"]

_WINDOW_SECONDS: dict[Window, int] = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True, slots=True)
class Reading:
    """What one response says about one quota."""

    kind: Kind
    window: Window
    limit: int | None
    remaining: int | None
    reset_at: float | None  # epoch seconds when it refills; None if unknown
    source: str  # "header" or "body"


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one provider family reports its quotas. A preset owns one (by reference)."""

    name: str  # the preset type it was written for (what persisted state records)
    # Windows of the unsuffixed `x-ratelimit-{field}-{requests,tokens}` family,
    # or None where the provider does not send it. The names are OpenAI's, the
    # meaning is not shared: Groq's `-requests` is its daily quota.
    plain: Mapping[str, Window] | None = None
    # OpenRouter's bare `x-ratelimit-{limit,remaining,reset}` (reset in epoch ms).
    bare: bool = False
    # The zone whose midnight starts the provider's day; None is UTC.
    day_zone: str | None = None


_OPENAI_WINDOWS: dict[str, Window] = {"requests": "minute", "tokens": "minute"}

# One per provider family; presets (chain429.upstream.presets) point at them.
# The suffixed family (`-requests-day`, `-req-minute`) is read for every
# dialect: its names say their own window, so reading it where a provider
# never sends it costs nothing.
OPENAI = Dialect("openai", plain=_OPENAI_WINDOWS)
GROQ = Dialect("groq", plain={"requests": "day", "tokens": "minute"})
CEREBRAS = Dialect("cerebras")
MISTRAL = Dialect("mistral")
OPENROUTER = Dialect("openrouter", bare=True)
GOOGLE_AI = Dialect("google-ai", day_zone="America/Los_Angeles")
# Any server that speaks OpenAI's API: every family it might send is read.
GENERIC = Dialect("generic-openai", plain=_OPENAI_WINDOWS, bare=True)


# -- time --------------------------------------------------------------------


def window_end(window: Window, now: float) -> float:
    """End of the current UTC minute/hour/day: the cooldown for "remaining 0, no reset"."""
    size = _WINDOW_SECONDS[window]
    return (math.floor(now / size) + 1) * float(size)


@cache
def _zone(name: str) -> tzinfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        # No tz database (Windows without the tzdata package): standard time
        # is at worst an hour late in summer, better than failing a request.
        return timezone(timedelta(hours=-8), "PST")


def next_day_boundary(dialect: Dialect, now: float) -> float:
    """Epoch seconds of the provider's next midnight (Pacific for Gemini, UTC otherwise)."""
    zone_name = dialect.day_zone
    if zone_name is None:
        return window_end("day", now)
    return next_midnight(now, _zone(zone_name))


def _refill_at(dialect: Dialect, window: Window, now: float) -> float:
    if window == "day":
        return next_day_boundary(dialect, now)
    return window_end(window, now)


# -- headers -----------------------------------------------------------------

_FIELD = r"(limit|remaining|reset)"
_SUFFIXED = re.compile(rf"x-ratelimit-{_FIELD}-(requests|req|tokens)-(minute|hour|day)")
_PLAIN = re.compile(rf"x-ratelimit-{_FIELD}-(requests|tokens)")
_BARE = re.compile(rf"x-ratelimit-{_FIELD}")
# OpenRouter's bare family serves both its 20/min and its 50/day quota; only
# the reset tells them apart. Over an hour away cannot be the minute's.
_BARE_DAY_AFTER_S = 3600.0

_Key = tuple[Kind, Window]


def _count(value: str | None) -> int | None:
    """A limit or remaining count; "14399.0" is 14399, junk and negatives are None."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number >= 0 else None


def _reset(value: str | None, now: float) -> float | None:
    return None if value is None else parse_reset(value, now=now)


def _group(
    spec: Dialect, headers: Iterable[tuple[str, str]], now: float
) -> dict[_Key, dict[str, str]]:
    """Header values per quota, most explicit family first.

    A server may spell one quota twice (`-requests-minute` and `-requests`);
    the first family to name a quota wins so it is never counted twice.
    """
    suffixed: dict[_Key, dict[str, str]] = {}
    plain: dict[_Key, dict[str, str]] = {}
    bare: dict[str, str] = {}
    for name, value in headers:
        lname = name.strip().lower()
        if match := _SUFFIXED.fullmatch(lname):
            field, kind, window = match.groups()
            key = cast(_Key, ("tokens" if kind == "tokens" else "requests", window))
            suffixed.setdefault(key, {})[field] = value
        elif spec.plain is not None and (match := _PLAIN.fullmatch(lname)):
            field, kind = match.groups()
            plain.setdefault((cast(Kind, kind), spec.plain[kind]), {})[field] = value
        elif spec.bare and (match := _BARE.fullmatch(lname)):
            bare[match.group(1)] = value
    groups: dict[_Key, dict[str, str]] = dict(suffixed)
    for key, fields in plain.items():
        groups.setdefault(key, fields)
    if bare:
        at = _reset(bare.get("reset"), now)
        far = at is not None and at - now > _BARE_DAY_AFTER_S
        groups.setdefault(("requests", "day" if far else "minute"), bare)
    return groups


def _readings(
    dialect: Dialect, headers: Iterable[tuple[str, str]], now: float, source: str
) -> list[Reading]:
    out = []
    for (kind, window), fields in _group(dialect, headers, now).items():
        limit, remaining = _count(fields.get("limit")), _count(fields.get("remaining"))
        reset_at = _reset(fields.get("reset"), now)
        if limit is None and remaining is None and reset_at is None:
            continue  # all junk: this response says nothing usable about the quota
        if remaining == 0 and reset_at is None:
            # Mistral never sends a reset; an empty quota still needs an end.
            reset_at = _refill_at(dialect, window, now)
        out.append(Reading(kind, window, limit, remaining, reset_at, source))
    return sorted(out, key=lambda r: (r.kind, _WINDOW_SECONDS[r.window]))


def read_headers(dialect: Dialect, headers: Mapping[str, str], *, now: float) -> list[Reading]:
    """Every quota the response headers describe, one reading per (kind, window)."""
    return _readings(dialect, headers.items(), now, "header")


# -- bodies ------------------------------------------------------------------

_MAX_JSON = 65536  # 429 bodies are small; a huge one is not worth parsing
_QUOTA_ID = re.compile(r"(Requests|Tokens)\w*?Per(Minute|Hour|Day)")


def _error_object(body: bytes) -> dict[str, Any] | None:
    if len(body) > _MAX_JSON:
        return None
    data = provider_json.parse(body)
    # Gemini's OpenAI-compatible endpoint wraps the error in a one-item list.
    if isinstance(data, list) and data:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else None


def _gemini_readings(dialect: Dialect, error: dict[str, Any], now: float) -> list[Reading]:
    details = error.get("details")
    if not isinstance(details, list):
        return []
    details = [d for d in details if isinstance(d, dict)]
    retry_s = None
    for detail in details:
        delay = detail.get("retryDelay")
        if str(detail.get("@type", "")).endswith("RetryInfo") and isinstance(delay, str):
            retry_s = parse_duration(delay)
    out = []
    for detail in details:
        violations = detail.get("violations")
        if not str(detail.get("@type", "")).endswith("QuotaFailure") or not isinstance(
            violations, list
        ):
            continue
        for violation in violations:
            quota_id = violation.get("quotaId") if isinstance(violation, dict) else None
            match = _QUOTA_ID.search(quota_id) if isinstance(quota_id, str) else None
            if match is None:
                continue
            kind = cast(Kind, match.group(1).lower())
            window = cast(Window, match.group(2).lower())
            value = violation.get("quotaValue")
            limit = _count(str(value)) if isinstance(value, str | int) else None
            # retryDelay stays short (seconds) even when the day's quota is
            # gone; trusting it there is what burns requests all day.
            if window == "day" or retry_s is None:
                reset_at = _refill_at(dialect, window, now)
            else:
                reset_at = now + retry_s
            out.append(Reading(kind, window, limit, 0, reset_at, "body"))
    return out


def read_body(dialect: Dialect, body: bytes, *, now: float) -> list[Reading]:
    """Quotas a 429 body describes: Gemini's QuotaFailure, OpenRouter's `metadata.headers`."""
    error = _error_object(body)
    if error is None:
        return []
    out = _gemini_readings(dialect, error, now)
    metadata = error.get("metadata")
    embedded = metadata.get("headers") if isinstance(metadata, dict) else None
    if isinstance(embedded, dict):
        # OpenRouter repeats its X-RateLimit-* inside the body, numbers or strings.
        pairs = [(str(k), str(v)) for k, v in embedded.items() if isinstance(v, str | int | float)]
        out += _readings(dialect, pairs, now, "body")
    return out


# -- 429: is it the day's quota? ---------------------------------------------

# "requests per day (RPD)" (OpenAI, Groq), "Tokens per day limit exceeded"
# (Cerebras), "GenerateRequestsPerDay..." (Gemini), "free-models-per-day".
_DAILY_KIND = re.compile(rb"(request|token)s?[ _-]?per[ _-]?day")
_PER_DAY = re.compile(rb"per[ _-]?day")
# OpenRouter's per-minute 429 may still advertise "1000 requests per day".
_NOT_DAILY = (b"free-models-per-min",)


def _daily_named(body: bytes) -> tuple[bool, set[Kind]]:
    """Whether a 429 body blames a daily quota, and which kinds it names."""
    text = body[:8192].lower()
    if any(marker in text for marker in _NOT_DAILY) or not _PER_DAY.search(text):
        return False, set()
    kinds: set[Kind] = {
        "tokens" if m == b"token" else "requests" for m in _DAILY_KIND.findall(text)
    }
    if b"free-models-per-day" in text:
        kinds.add("requests")
    return True, kinds


def daily_exhausted(
    dialect: Dialect, status: int, headers: Mapping[str, str], body: bytes, *, now: float
) -> float | None:
    """For a 429 whose DAILY quota is gone: epoch seconds it comes back; else None.

    The daily reading's own reset wins when the response gives one (Groq's
    daily bucket refills continuously, so its reset can be minutes away);
    otherwise the provider's next day boundary.
    """
    if status != 429:
        return None
    named, kinds = _daily_named(body)
    readings = read_headers(dialect, headers, now=now) + read_body(dialect, body, now=now)
    gone = [r for r in readings if r.window == "day" and (r.remaining == 0 or r.kind in kinds)]
    if gone:
        resets = [r.reset_at for r in gone if r.reset_at is not None and r.reset_at > now]
        return max(resets) if resets else next_day_boundary(dialect, now)
    return next_day_boundary(dialect, now) if named else None
