"""Read-only questions about the request log, answered as JSON-ready dicts.

Every function here is synchronous and runs on a worker thread (the server
calls it through `asyncio.to_thread`); none writes. Ranges are half-open,
`[since_ms, until_ms)`, in epoch milliseconds.

Aggregates read `HourlyRollup` for the whole hours inside a range and the raw
`requests` rows only for the partial hours at its two ends. That keeps a 30-day
summary at a few thousand rollup rows however many requests were logged, and
still exact at the edges: `since=now-24h` counts requests to the millisecond.
Attempt counts per provider work the same way (chain429.requestlog.provider_stats).

Latency percentiles (`p50`, `p95`) are *estimates*: percentiles cannot be
summed across hours, so each rollup row keeps a histogram over
`LATENCY_BUCKETS_MS`, and the raw edge rows are bucketed the same way before
merging. A percentile is interpolated linearly inside the bucket it falls in,
so its error is at most that bucket's width; one above the last bound reports
the last bound. `avg` is exact.

Every question but a single request's takes an `endpoint` (chat, completions,
embeddings) to count only the requests of that route; `endpoints` answers per
route. The rollups key their rows by it, so filtering costs nothing more.

A request counts as an error when its outcome is anything but "success"; both
the rollup and the raw rows are classified by that one rule (the rollup's own
`errors` column is not read), so whole hours and edges always agree.

Parsing and checking the API's parameters is `chain429.requestlog.params`'s job;
its names are re-exported here, so `stats.parse_range` and the rest still work.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import peewee
from peewee import Case, fn

from chain429.requestlog.database import is_postgres, read_connection
from chain429.requestlog.params import (
    BUCKETS_MS,
    DEFAULT_LIMIT,
    MAX_BUCKETS,
    MAX_LIMIT,
    MAX_MINUTE_RANGE_MS,
    StatsParamError,
    decode_cursor,
    encode_cursor,
    parse_limit,
    parse_range,
    parse_time,
    pick_bucket,
)
from chain429.requestlog.tables import (
    LATENCY_BUCKETS_MS,
    HourlyRollup,
    RequestRow,
    database_proxy,
)
from chain429.upstream.times import HOUR_MS
from chain429.upstream.times import iso_ms as iso

__all__ = [
    "BUCKETS_MS",
    "DEFAULT_LIMIT",
    "LATENCY_BUCKETS_MS",
    "MAX_BUCKETS",
    "MAX_LIMIT",
    "MAX_MINUTE_RANGE_MS",
    "SUCCESS",
    "StatsParamError",
    "Totals",
    "chains",
    "clients",
    "collect",
    "decode_cursor",
    "encode_cursor",
    "endpoints",
    "parse_limit",
    "parse_range",
    "parse_time",
    "pick_bucket",
    "quantile",
    "read_snapshot",
    "summary",
    "timeseries",
]

SUCCESS = "success"

_DIMENSIONS = ("chain", "provider", "outcome", "endpoint", "client")
# What the rollup query reads: its key columns, then its sums in Totals.add's order
# (the successes, counted from `requests` and `outcome`, come second).
_ROLLUP_KEYS = ("hour_ms", *_DIMENSIONS)
_ROLLUP_SUMS = ("requests", "attempts", "prompt_tokens", "completion_tokens", "latency_sum_ms")


# -- aggregation over rollup + edges -----------------------------------------


@dataclass(slots=True)
class Totals:
    requests: int = 0
    successes: int = 0
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_sum_ms: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))

    def merge(self, other: Totals) -> None:
        """Add another group's totals to these."""
        self.requests += other.requests
        self.successes += other.successes
        self.attempts += other.attempts
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.latency_sum_ms += other.latency_sum_ms
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram, strict=True)]

    def add(self, row: tuple[Any, ...]) -> None:
        """Add one aggregate row: the six sums, then one count per histogram bucket."""
        # PostgreSQL sums bigints as numeric (Decimal); int() keeps the JSON plain.
        self.requests += int(row[0] or 0)
        self.successes += int(row[1] or 0)
        self.attempts += int(row[2] or 0)
        self.prompt_tokens += int(row[3] or 0)
        self.completion_tokens += int(row[4] or 0)
        self.latency_sum_ms += float(row[5] or 0)
        for i, count in enumerate(row[6:]):
            self.histogram[i] += int(count or 0)

    @property
    def errors(self) -> int:
        return self.requests - self.successes

    def tokens(self) -> dict[str, int]:
        return {
            "prompt": self.prompt_tokens,
            "completion": self.completion_tokens,
            "total": self.prompt_tokens + self.completion_tokens,
        }

    def latency(self, *, avg: bool = True) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        if avg:
            out["avg"] = round(self.latency_sum_ms / self.requests, 1) if self.requests else None
        out["p50"] = quantile(self.histogram, 0.50)
        out["p95"] = quantile(self.histogram, 0.95)
        return out


def quantile(histogram: list[int], q: float) -> float | None:
    """Estimate a quantile from per-bucket counts, interpolating inside the bucket."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(histogram):
        if count and seen + count >= rank:
            if i >= len(LATENCY_BUCKETS_MS):
                return float(LATENCY_BUCKETS_MS[-1])  # open-ended: all we know is "above"
            low = LATENCY_BUCKETS_MS[i - 1] if i else 0.0
            high = LATENCY_BUCKETS_MS[i]
            return round(low + (high - low) * (rank - seen) / count, 1)
        seen += count
    return float(LATENCY_BUCKETS_MS[-1])


def _database() -> peewee.Database:
    database: peewee.Database | None = database_proxy.obj
    if database is None:
        raise RuntimeError("the request log database is not open (chain429.database.open_database)")
    return database


@contextmanager
def read_snapshot() -> Iterator[None]:
    """This thread's own connection, and one consistent view for all queries of one answer.

    The writer adds rows and updates the rollup in one transaction; reading
    both in one transaction (a WAL snapshot on SQLite, REPEATABLE READ on
    PostgreSQL) means an answer never counts a batch in one and not the other.
    """
    with read_connection(_database()):
        yield


def _raw_columns() -> list[Any]:
    latency = RequestRow.latency_ms
    bounds = LATENCY_BUCKETS_MS
    buckets = [fn.SUM(Case(None, [(latency <= bounds[0], 1)], 0))]
    for low, high in itertools.pairwise(bounds):
        buckets.append(fn.SUM(Case(None, [((latency > low) & (latency <= high), 1)], 0)))
    buckets.append(fn.SUM(Case(None, [(latency > bounds[-1], 1)], 0)))
    return [
        fn.COUNT(RequestRow.id),
        fn.SUM(Case(None, [(RequestRow.outcome == SUCCESS, 1)], 0)),
        fn.SUM(RequestRow.attempts),
        fn.SUM(fn.COALESCE(RequestRow.prompt_tokens, 0)),
        fn.SUM(fn.COALESCE(RequestRow.completion_tokens, 0)),
        fn.SUM(latency),
        *buckets,
    ]


def _bucket_expr(column: Any, bucket_ms: int) -> Any:
    # Both databases store times as integers, so "/" is integer division here.
    return (column / bucket_ms) * bucket_ms


def _ordinals(keys: list[Any]) -> list[Any]:
    # GROUP BY 1, 2: PostgreSQL with server-side parameters (psycopg 3) cannot tell
    # that `COALESCE(chain, $1)` in SELECT and `COALESCE(chain, $5)` are one expression.
    return [peewee.SQL(str(i)) for i in range(1, len(keys) + 1)]


def _raw_dimension(name: str) -> Any:
    # The rollup keeps "" for "no chain" / "nobody answered" / "no client"; raw rows
    # say NULL.
    if name == "outcome":
        return RequestRow.outcome
    return fn.COALESCE(getattr(RequestRow, name), "")


def _raw_part(
    since_ms: int,
    until_ms: int,
    dims: tuple[str, ...],
    bucket_ms: int | None,
    endpoint: str | None = None,
) -> Iterator[tuple[Any, ...]]:
    keys = [_raw_dimension(d) for d in dims]
    if bucket_ms:
        keys.insert(0, _bucket_expr(RequestRow.time_ms, bucket_ms))
    query: Any = (
        RequestRow.select(*keys, *_raw_columns())
        .where((RequestRow.time_ms >= since_ms) & (RequestRow.time_ms < until_ms))
        .tuples()
    )
    if endpoint is not None:
        query = query.where(RequestRow.endpoint == endpoint)
    if keys:
        query = query.group_by(*_ordinals(keys))
    yield from query


def _rollup_part(
    first_hour_ms: int,
    end_hour_ms: int,
    dims: tuple[str, ...],
    bucket_ms: int | None,
    endpoint: str | None = None,
) -> Iterator[tuple[Any, ...]]:
    # Histograms are summed inside the database, so 30 days of rollup rows come
    # back as a handful of rows. PostgreSQL re-parses `json` text at every `->>`:
    # the inner query parses each histogram once into `jsonb`, and OFFSET 0 keeps
    # the planner from folding it back into 15 parses a row (5x slower at 30 days).
    # SQLite caches the parse across json_extract calls on the same value.
    postgres = is_postgres(_database())
    R = HourlyRollup
    hist = R.latency_histogram.cast("jsonb") if postgres else R.latency_histogram
    columns = (getattr(R, name) for name in (*_ROLLUP_KEYS, *_ROLLUP_SUMS))
    inner = R.select(*columns, hist.alias("histogram"))
    inner = inner.where((R.hour_ms >= first_hour_ms) & (R.hour_ms < end_hour_ms))
    if endpoint is not None:
        inner = inner.where(R.endpoint == endpoint)
    if postgres:
        inner = inner.offset(0)  # SQLite, unfenced, flattens the subquery away
    src: Any = inner.alias("r")
    buckets = []
    for i in range(len(LATENCY_BUCKETS_MS) + 1):
        if postgres:
            item = peewee.Expression(src.c.histogram, "->>", peewee.SQL(str(i)))
            buckets.append(fn.SUM(item.cast("bigint")))
        else:
            buckets.append(fn.SUM(fn.json_extract(src.c.histogram, f"$[{i}]")))
    keys = [getattr(src.c, d) for d in dims]
    if bucket_ms:
        hour = src.c.hour_ms
        keys.insert(0, hour if bucket_ms == HOUR_MS else _bucket_expr(hour, bucket_ms))
    sums = [
        fn.SUM(src.c.requests),
        fn.SUM(Case(None, [(src.c.outcome == SUCCESS, src.c.requests)], 0)),
        *(fn.SUM(getattr(src.c, name)) for name in _ROLLUP_SUMS[1:]),
    ]
    query: Any = peewee.Select([src], [*keys, *sums, *buckets]).bind(_database()).tuples()
    if keys:
        query = query.group_by(*_ordinals(keys))
    yield from query


def range_parts(
    since_ms: int, until_ms: int, rollup: bool = True
) -> tuple[tuple[int, int] | None, list[tuple[int, int]]]:
    """How a range is read: the whole hours inside it from a rollup (None when there
    are none, or `rollup` is false), and the rest, its partial edges, from raw rows."""
    first_hour, end_hour = -(-since_ms // HOUR_MS) * HOUR_MS, until_ms // HOUR_MS * HOUR_MS
    if not rollup or first_hour >= end_hour:
        return None, [(since_ms, until_ms)]
    edges = [(a, b) for a, b in ((since_ms, first_hour), (end_hour, until_ms)) if a < b]
    return (first_hour, end_hour), edges


def collect(
    since_ms: int,
    until_ms: int,
    dims: tuple[str, ...] = (),
    bucket_ms: int | None = None,
    endpoint: str | None = None,
) -> dict[tuple[Any, ...], Totals]:
    """Totals per group: (bucket start if bucketed, then the named dimensions); only
    the requests of `endpoint`, when given."""
    assert all(d in _DIMENSIONS for d in dims)
    width = len(dims) + (1 if bucket_ms else 0)
    groups: dict[tuple[Any, ...], Totals] = {}

    def take(rows: Iterator[tuple[Any, ...]]) -> None:
        for row in rows:
            key = tuple(int(v) if i == 0 and bucket_ms else v for i, v in enumerate(row[:width]))
            if row[width] is None or int(row[width]) == 0:
                continue  # an ungrouped aggregate over no rows is one row of NULLs
            groups.setdefault(key, Totals()).add(row[width:])

    # Sub-hour buckets cannot come from hourly rows; such ranges are short (see timeseries).
    hours, edges = range_parts(since_ms, until_ms, bucket_ms is None or bucket_ms % HOUR_MS == 0)
    if hours:
        take(_rollup_part(*hours, dims, bucket_ms, endpoint))
    for edge in edges:
        take(_raw_part(*edge, dims, bucket_ms, endpoint))
    return groups


def _range_fields(since_ms: int, until_ms: int, endpoint: str | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "since_ms": since_ms,
        "until_ms": until_ms,
        "since": iso(since_ms),
        "until": iso(until_ms),
    }
    if endpoint is not None:
        fields["endpoint"] = endpoint  # the filter the numbers are under
    return fields


# -- the questions -----------------------------------------------------------


def summary(since_ms: int, until_ms: int, endpoint: str | None = None) -> dict[str, Any]:
    """Totals over the range; `latency_ms.p50/p95` are histogram estimates."""
    with read_snapshot():
        # No dimensions: one group.
        totals = collect(since_ms, until_ms, endpoint=endpoint).get((), Totals())
    return {
        "object": "stats.summary",
        **_range_fields(since_ms, until_ms, endpoint),
        "requests": totals.requests,
        "successes": totals.successes,
        "errors": totals.errors,
        "error_rate": round(totals.errors / totals.requests, 4) if totals.requests else 0.0,
        "attempts": totals.attempts,
        "tokens": totals.tokens(),
        "latency_ms": totals.latency(),
    }


def _per(dimension: str, since_ms: int, until_ms: int, endpoint: str | None) -> dict[str, Any]:
    """One row per value of `dimension` (`null`: requests without one)."""
    with read_snapshot():
        groups = collect(since_ms, until_ms, (dimension,), endpoint=endpoint)
    rows = []
    for (name,), totals in sorted(groups.items(), key=lambda kv: (kv[0][0] == "", kv[0][0])):
        rows.append(
            {
                dimension: name or None,
                "requests": totals.requests,
                "successes": totals.successes,
                "errors": totals.errors,
                "error_rate": round(totals.errors / totals.requests, 4),
                "tokens": totals.tokens(),
                "latency_ms": totals.latency(),
            }
        )
    return {
        "object": f"stats.{dimension}s",
        **_range_fields(since_ms, until_ms, endpoint),
        "data": rows,
    }


def chains(since_ms: int, until_ms: int, endpoint: str | None = None) -> dict[str, Any]:
    """Per chain (`null`: requests that never reached one, e.g. an unknown model)."""
    return _per("chain", since_ms, until_ms, endpoint)


def endpoints(since_ms: int, until_ms: int) -> dict[str, Any]:
    """Per proxied route: `chat`, `completions`, `embeddings` (those with requests)."""
    return _per("endpoint", since_ms, until_ms, None)


# A client's own refusal (chain429.server.client_gate): counted apart in `clients`.
CLIENT_RATE_LIMITED = "client_rate_limited"


def clients(since_ms: int, until_ms: int, endpoint: str | None = None) -> dict[str, Any]:
    """Per client (`null`: requests without one: `apiKeys`, keyless, refused keys).

    `rate_limited` counts the requests refused by the client's own limits
    (`client_rate_limited`); they are errors too, and reached no provider.
    """
    with read_snapshot():
        groups = collect(since_ms, until_ms, ("client", "outcome"), endpoint=endpoint)
    per_client: dict[str, Totals] = {}
    limited: dict[str, int] = {}
    for (name, outcome), totals in groups.items():
        per_client.setdefault(name, Totals()).merge(totals)
        if outcome == CLIENT_RATE_LIMITED:
            limited[name] = limited.get(name, 0) + totals.requests
    rows = []
    for name in sorted(per_client, key=lambda n: (n == "", n)):
        totals = per_client[name]
        rows.append(
            {
                "client": name or None,
                "requests": totals.requests,
                "successes": totals.successes,
                "errors": totals.errors,
                "error_rate": round(totals.errors / totals.requests, 4),
                "rate_limited": limited.get(name, 0),
                "tokens": totals.tokens(),
                "latency_ms": totals.latency(),
            }
        )
    return {"object": "stats.clients", **_range_fields(since_ms, until_ms, endpoint), "data": rows}


def timeseries(
    since_ms: int, until_ms: int, bucket: str | None = None, endpoint: str | None = None
) -> dict[str, Any]:
    """Per time bucket (UTC-aligned; the first and last may be cut by the range).

    Every bucket in the range is listed, empty ones with zeros, so a chart needs
    no gap filling. `latency_ms.p50/p95` are histogram estimates.
    """
    bucket_ms = pick_bucket(since_ms, until_ms, bucket)
    with read_snapshot():
        groups = collect(since_ms, until_ms, (), bucket_ms, endpoint)
    points = []
    start = since_ms // bucket_ms * bucket_ms
    while start < until_ms:
        totals = groups.get((start,), Totals())
        points.append(
            {
                "start_ms": start,
                "start": iso(start),
                "requests": totals.requests,
                "errors": totals.errors,
                "tokens": totals.tokens(),
                "latency_ms": totals.latency(avg=False),
            }
        )
        start += bucket_ms
    name = next(k for k, v in BUCKETS_MS.items() if v == bucket_ms)
    return {
        "object": "stats.timeseries",
        **_range_fields(since_ms, until_ms, endpoint),
        "bucket": name,
        "bucket_ms": bucket_ms,
        "data": points,
    }
