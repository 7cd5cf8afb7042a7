"""The query parameters of the stats API: parsed, checked, and turned into ranges.

`parse_range` reads `since`/`until` (ISO 8601 or an age such as `24h`) into a
half-open `[since_ms, until_ms)` in epoch milliseconds; `parse_limit`,
`decode_cursor` and `pick_bucket` check the paging and bucketing parameters.
Each refuses a bad value with `StatsParamError`, which names the parameter for
the API's 400 answer, before any query runs. `iso` and `encode_cursor` go the
other way, for the answers. The queries themselves are `chain429.requestlog.stats`'s.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime

from chain429.upstream.times import DAY_MS, HOUR_MS, MINUTE_MS

BUCKETS_MS = {"5m": 5 * MINUTE_MS, "1h": HOUR_MS, "1d": DAY_MS}
# Minute buckets are computed from raw rows; past two days that scan stops being small.
MAX_MINUTE_RANGE_MS = 2 * DAY_MS
MAX_BUCKETS = 5000  # a chart has no use for more points, and each one is a dict
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT_MS = {"s": 1000, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS}
_YEAR_10000_MS = 253_402_300_800_000


class StatsParamError(ValueError):
    """A bad query parameter; `param` names it, for the API's 400 answer."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


def parse_time(value: str, now: float, param: str) -> int:
    """ISO 8601 (`2026-11-26T10:00:00Z`, `2026-11-26`) or an age (`24h`, `7d`, `30m`, `90s`)."""
    match = _RELATIVE.match(value)
    if match:
        time_ms = int(now * 1000) - int(match.group(1)) * _UNIT_MS[match.group(2)]
    else:
        try:
            moment = datetime.fromisoformat(value.strip())  # a date alone is its midnight
        except ValueError:
            raise StatsParamError(
                param,
                f"expected an ISO 8601 time (2026-11-26T10:00:00Z, 2026-11-26) or an age "
                f"such as 24h, 7d, 30m, 90s; got {value!r}",
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # the log is in UTC; so is a bare time
        time_ms = int(moment.timestamp() * 1000)
    # Outside this, the answer could not even print its own range (`9999999d`).
    if not 0 <= time_ms < _YEAR_10000_MS:
        raise StatsParamError(param, f"{value!r} is before 1970 or after 9999")
    return time_ms


def parse_range(since: str | None, until: str | None, now: float) -> tuple[int, int]:
    """`(since_ms, until_ms)`; by default the last 24 hours up to `now` (epoch seconds)."""
    until_ms = parse_time(until, now, "until") if until else int(now * 1000)
    since_ms = parse_time(since, now, "since") if since else until_ms - DAY_MS
    if since_ms >= until_ms:
        raise StatsParamError("since", "must be earlier than until")
    return since_ms, until_ms


def parse_limit(value: str | int | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise StatsParamError("limit", f"must be an integer, got {value!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise StatsParamError("limit", f"must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


def encode_cursor(time_ms: int, request_id: str) -> str:
    raw = f"{time_ms}:{request_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        time_text, request_id = text.split(":", 1)
        return int(time_text), request_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise StatsParamError("cursor", "is not a cursor this server handed out") from None


def pick_bucket(since_ms: int, until_ms: int, bucket: str | None) -> int:
    span = until_ms - since_ms
    if bucket is None:
        bucket_ms = 5 * MINUTE_MS if span <= 6 * HOUR_MS else HOUR_MS
        bucket_ms = bucket_ms if span <= 7 * DAY_MS else DAY_MS
    elif bucket not in BUCKETS_MS:
        raise StatsParamError("bucket", f"must be one of 5m, 1h, 1d; got {bucket!r}")
    else:
        bucket_ms = BUCKETS_MS[bucket]
        if bucket_ms < HOUR_MS and span > MAX_MINUTE_RANGE_MS:
            raise StatsParamError("bucket", "5m buckets cover at most 48h; use 1h or 1d")
    if span / bucket_ms > MAX_BUCKETS:
        raise StatsParamError(
            "bucket" if bucket else "since", f"the range would have over {MAX_BUCKETS} buckets"
        )
    return bucket_ms
