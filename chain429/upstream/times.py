"""Time, in one place: the units chain429 counts in, ISO 8601 as it writes it,
and times as providers write them (durations, Retry-After, reset headers).

Pure functions that take `now` (epoch seconds) instead of reading a clock.
The request log, the stats API and the rate-limit report all format with
`iso_ms`, so a time reads the same wherever it shows.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, time, timedelta, tzinfo
from email.utils import parsedate_to_datetime

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def next_midnight(now: float, zone: tzinfo) -> float:
    """Epoch seconds of the first midnight after `now` in `zone`: when a calendar day resets.

    Zones that switch summer time do it away from midnight (US zones at 02:00),
    so local midnight exists exactly once and a day is 23, 24 or 25 hours.
    """
    today = datetime.fromtimestamp(now, zone).date()
    return datetime.combine(today + timedelta(days=1), time(), tzinfo=zone).timestamp()


def iso_ms(time_ms: int) -> str:
    """`2026-11-26T10:37:12.345Z`: UTC, milliseconds, `Z`."""
    moment = datetime.fromtimestamp(time_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as `iso_ms` does it; None stays None."""
    return None if epoch is None else iso_ms(int(epoch * 1000))


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|h|m|s))+$")


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (`1m30s`, `120ms`, `2h30m0s`) or a bare number of seconds."""
    text = text.strip().lower()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    if not _DURATION.match(text):
        return None
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in _DURATION_PART.findall(text))


def parse_retry_after(value: str, *, now: float) -> float | None:
    """Epoch seconds from a Retry-After value: delta-seconds or an HTTP-date."""
    value = value.strip()
    seconds = parse_duration(value)
    if seconds is not None:
        return now + seconds
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def parse_reset(value: str, *, now: float) -> float | None:
    """Epoch seconds from a rate-limit reset header in any dialect we know.

    Durations (`6m0s`, `59.56s`) and bare seconds are relative; a bare number
    that can only be a clock reading is an epoch (milliseconds for OpenRouter).
    """
    seconds = parse_duration(value)
    if seconds is None:
        return None
    if seconds >= 1e12:
        return seconds / 1000.0
    if seconds >= 1e9:
        return seconds
    return now + seconds
