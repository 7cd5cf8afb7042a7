"""The hourly rollups the request log writer keeps: tally a batch, merge it in.

`merge_rollups` adds a batch of records to `HourlyRollup` (requests per hour,
chain, provider, outcome, endpoint and client, with a latency histogram over
`LATENCY_BUCKETS_MS`), to `HourlyAttemptRollup` (attempts per hour,
provider, model, outcome and endpoint; the hour and endpoint are the
request's) and to `HourlySpendRollup` (what priced answers cost per hour,
client, chain and provider). It runs inside the
writer's batch transaction (see `chain429.requestlog.writer`), so the rollups never
count a batch the raw rows do not hold, or the other way round.

Each tallied key is one upsert that adds to the row in place
(`ON CONFLICT ... DO UPDATE`), so instances sharing one database merge into
the same hours without a read-modify-write to race on. Keys are clipped
to their columns' widths exactly as the raw rows are (`clip`), so both
always name the same chain, provider, model and client.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
from typing import Any, cast

import peewee

from chain429.requestlog.database import is_postgres
from chain429.requestlog.records import RequestRecord
from chain429.requestlog.tables import (
    LATENCY_BUCKETS_MS,
    HourlyAttemptRollup,
    HourlyRollup,
    HourlySpendRollup,
)
from chain429.upstream.times import HOUR_MS


def fields_of(model: Any, names: list[str]) -> list[Any]:
    return [model._meta.fields[name] for name in names]


# The text columns of a row, as (position, width): the only values `clip` looks at.
ColumnLimits = tuple[tuple[int, int], ...]


def column_limits(fields: list[Any]) -> ColumnLimits:
    return tuple((i, f.max_length) for i, f in enumerate(fields) if isinstance(f, peewee.CharField))


def clip(values: tuple[Any, ...], limits: ColumnLimits) -> tuple[Any, ...]:
    """Cut strings to their column's width: PostgreSQL rejects a longer value, and one
    over-long model name must not cost the other records of its batch.

    Every record passes through here (and each of its attempts): values that fit,
    nearly all of them, come back as they are, without a copy.
    """
    for i, width in limits:  # a plain loop: this runs for every row written
        value = values[i]
        if value.__class__ is str and len(value) > width:
            break
    else:
        return values
    cut = list(values)
    for i, width in limits:
        if isinstance(cut[i], str):
            cut[i] = cut[i][:width]
    return tuple(cut)


_ROLLUP_KEY_COLUMNS = ["hour_ms", "chain", "provider", "outcome", "endpoint", "client"]
_ROLLUP_SUM_COLUMNS = [
    "requests",
    "errors",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "latency_sum_ms",
]

_ATTEMPT_ROLLUP_KEY_COLUMNS = ["hour_ms", "provider", "model", "outcome", "endpoint"]

_ROLLUP_KEY_FIELDS = fields_of(HourlyRollup, _ROLLUP_KEY_COLUMNS)
_ROLLUP_SUM_FIELDS = fields_of(HourlyRollup, _ROLLUP_SUM_COLUMNS)
_HISTOGRAM: Any = HourlyRollup.latency_histogram
_ATTEMPT_ROLLUP_KEY_FIELDS = fields_of(HourlyAttemptRollup, _ATTEMPT_ROLLUP_KEY_COLUMNS)
_ATTEMPT_SUM_FIELDS = fields_of(HourlyAttemptRollup, ["count", "latency_sum_ms"])

_SPEND_KEY_FIELDS = fields_of(HourlySpendRollup, ["hour_ms", "client", "chain", "provider"])
_SPEND_SUM_FIELDS = fields_of(
    HourlySpendRollup,
    ["requests", "cost_usd", "estimated_usd", "prompt_tokens", "completion_tokens"],
)

_ROLLUP_KEY_LIMITS = column_limits(_ROLLUP_KEY_FIELDS)
_ATTEMPT_ROLLUP_KEY_LIMITS = column_limits(_ATTEMPT_ROLLUP_KEY_FIELDS)
_SPEND_KEY_LIMITS = column_limits(_SPEND_KEY_FIELDS)


def latency_bucket(latency_ms: float) -> int:
    """Index of the histogram bucket for a latency: the first bound it is at or below."""
    return bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)


RollupKey = tuple[int, str, str, str, str, str]  # hour, chain, provider, outcome, endpoint, client
AttemptKey = tuple[int, str, str, str, str]  # hour_ms, provider, model, outcome, endpoint


@dataclasses.dataclass(slots=True)
class _Tally:
    """One rollup row's worth of additions from a batch."""

    requests: int = 0
    errors: int = 0
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_sum_ms: float = 0.0
    histogram: list[int] = dataclasses.field(
        default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1)
    )

    def add(self, r: RequestRecord) -> None:
        self.requests += 1
        self.errors += r.status >= 400 or r.outcome != "success"
        self.attempts += r.attempts
        self.prompt_tokens += r.prompt_tokens or 0
        self.completion_tokens += r.completion_tokens or 0
        self.latency_sum_ms += r.latency_ms
        self.histogram[latency_bucket(r.latency_ms)] += 1


def _tally(records: list[RequestRecord]) -> dict[RollupKey, _Tally]:
    tallies: dict[RollupKey, _Tally] = {}
    for r in records:
        time_ms = int(r.started_at * 1000)
        key = cast(
            RollupKey,
            clip(
                (
                    time_ms - time_ms % HOUR_MS,
                    r.chain or "",
                    r.provider or "",
                    r.outcome,
                    r.endpoint,
                    r.client or "",
                ),
                _ROLLUP_KEY_LIMITS,
            ),
        )
        tally = tallies.get(key)
        if tally is None:
            tally = tallies[key] = _Tally()
        tally.add(r)
    return tallies


def _tally_attempts(records: list[RequestRecord]) -> dict[AttemptKey, list[float]]:
    """[count, latency sum] per attempt rollup key; the hour is the request's."""
    raw: dict[tuple[int, str, str, str, str], list[float]] = {}
    # Leading skips shared by many records (RequestRecord.leading_skips): counted per
    # (tuple, hour, endpoint), then added step by step once.
    shared: dict[tuple[int, int, str], list[Any]] = {}
    for r in records:
        time_ms = int(r.started_at * 1000)
        hour_ms = time_ms - time_ms % HOUR_MS
        trail = r.trail
        if r.leading_skips:
            group = shared.get(at := (id(r.leading_skips), hour_ms, r.endpoint))
            if group is None:
                group = shared[at] = [r.leading_skips, 0]
            group[1] += 1
            trail = trail[len(r.leading_skips) :]
        for a in trail:
            tally = raw.get(key := (hour_ms, a.provider, a.model, a.outcome, r.endpoint))
            if tally is None:
                tally = raw[key] = [0, 0.0]
            tally[0] += 1
            tally[1] += a.latency_ms or 0.0
    for (_, hour_ms, endpoint), (steps, times) in shared.items():
        for a in steps:  # skips: no latency
            tally = raw.setdefault((hour_ms, a.provider, a.model, a.outcome, endpoint), [0, 0.0])
            tally[0] += times
    # Keys clipped like the attempt rows themselves, so they match them: once per
    # key, not per attempt (a batch has thousands of attempts and a few keys).
    tallies: dict[AttemptKey, list[float]] = {}
    for key, (count, latency_sum) in raw.items():
        clipped = cast(AttemptKey, clip(key, _ATTEMPT_ROLLUP_KEY_LIMITS))
        tally = tallies.setdefault(clipped, [0, 0.0])
        tally[0] += count
        tally[1] += latency_sum
    return tallies


SpendKey = tuple[int, str, str, str]  # hour_ms, client, chain, provider


def _tally_spend(records: list[RequestRecord]) -> dict[SpendKey, list[float]]:
    """[requests, cost, estimated cost, prompt, completion] per spend key: priced answers only."""
    tallies: dict[SpendKey, list[float]] = {}
    for r in records:
        if r.cost_usd is None:
            continue
        time_ms = int(r.started_at * 1000)
        key = cast(
            SpendKey,
            clip(
                (time_ms - time_ms % HOUR_MS, r.client or "", r.chain or "", r.provider or ""),
                _SPEND_KEY_LIMITS,
            ),
        )
        tally = tallies.setdefault(key, [0, 0.0, 0.0, 0, 0])
        tally[0] += 1
        tally[1] += r.cost_usd
        tally[2] += r.cost_usd if r.cost_estimated else 0.0
        tally[3] += r.prompt_tokens or 0
        tally[4] += r.completion_tokens or 0
    return tallies


def quoted(db: peewee.Database, name: str) -> str:
    """A table or column name in the database's quotes (SQL built by hand, for speed)."""
    return f"{db.quote[0]}{name}{db.quote[1]}"


def _histogram_sum(db: peewee.Database, stored: str, added: str) -> str:
    """SQL for the stored histogram plus the added one, element by element.

    Written out bucket by bucket (there are len(LATENCY_BUCKETS_MS) + 1) so it
    needs no ordered aggregate. A stored value that is not a JSON array (the
    column default "[]" is one; damage is not) counts as zeros, as a missing
    bucket does: one bad row must not stop the log. On PostgreSQL the two
    texts are parsed once each into `jsonb` in a subquery; SQLite caches the
    parse across json_extract calls on the same value.
    """
    width = len(LATENCY_BUCKETS_MS) + 1
    if is_postgres(db):
        items = ", ".join(
            f"COALESCE((o->>{i})::bigint, 0) + COALESCE((n->>{i})::bigint, 0)" for i in range(width)
        )
        return (
            f"(SELECT jsonb_build_array({items})::text FROM (SELECT"
            f" (CASE WHEN {stored} ~ '^\\s*\\[[0-9 ,]*\\]\\s*$' THEN {stored} ELSE '[]' END)::jsonb"
            f" AS o, {added}::jsonb AS n) AS h)"
        )
    safe = f"CASE WHEN json_valid({stored}) THEN {stored} ELSE '[]' END"
    items = ", ".join(
        f"COALESCE(json_extract({safe}, '$[{i}]'), 0)"
        f" + COALESCE(json_extract({added}, '$[{i}]'), 0)"
        for i in range(width)
    )
    return f"json_array({items})"


def _upsert_sql(
    db: peewee.Database, model: Any, keys: list[Any], sums: list[Any], histogram: Any = None
) -> str:
    """INSERT a row per key, or add to the row already there: one statement, atomic per row.

    `ON CONFLICT ... DO UPDATE` on the key's unique index (both rollups have had
    one since their table was created) takes the row's lock and adds to the
    row as it is at that moment, on PostgreSQL as on SQLite (3.24+), so two
    instances merging into the same hour can neither lose nor double an
    addition. No read, no lock held between statements.
    """
    table = quoted(db, model._meta.table_name)
    columns = [*keys, *sums] + ([histogram] if histogram is not None else [])
    names = ", ".join(quoted(db, f.column_name) for f in columns)
    params = ", ".join([db.param] * len(columns))
    conflict = ", ".join(quoted(db, f.column_name) for f in keys)
    updates = [
        f"{quoted(db, f.column_name)} = {table}.{quoted(db, f.column_name)}"
        f" + excluded.{quoted(db, f.column_name)}"
        for f in sums
    ]
    if histogram is not None:
        column = quoted(db, histogram.column_name)
        merged = _histogram_sum(db, f"{table}.{column}", f"excluded.{column}")
        updates.append(f"{column} = {merged}")
    return (
        f"INSERT INTO {table} ({names}) VALUES ({params})"
        f" ON CONFLICT ({conflict}) DO UPDATE SET {', '.join(updates)}"
    )


def merge_rollups(db: peewee.Database, records: list[RequestRecord]) -> None:
    """Add the records to both hourly rollups, in the batch's transaction.

    Each rollup takes one upsert per key (`_upsert_sql`), sent with
    `executemany` (psycopg pipelines them; SQLite reuses one prepared
    statement). Several chain429 instances may write to one PostgreSQL at
    once: every addition is atomic on its row, keys go in sorted order and the
    rollups always in the same order (requests, attempts, spend), so two
    writers take row locks in the same order and cannot deadlock. On SQLite
    the batch's IMMEDIATE transaction holds the file's write lock anyway.
    """
    tallies = _tally(records)
    if tallies:
        rows: list[tuple[Any, ...]] = []
        for key in sorted(tallies):
            t = tallies[key]
            sums = (t.requests, t.errors, t.attempts, t.prompt_tokens, t.completion_tokens)
            rows.append((*key, *sums, t.latency_sum_ms, json.dumps(t.histogram)))
        sql = _upsert_sql(db, HourlyRollup, _ROLLUP_KEY_FIELDS, _ROLLUP_SUM_FIELDS, _HISTOGRAM)
        db.cursor().executemany(sql, rows)
    attempts = _tally_attempts(records)
    if attempts:
        counts = [(*key, int(attempts[key][0]), attempts[key][1]) for key in sorted(attempts)]
        sql = _upsert_sql(db, HourlyAttemptRollup, _ATTEMPT_ROLLUP_KEY_FIELDS, _ATTEMPT_SUM_FIELDS)
        db.cursor().executemany(sql, counts)
    spend = _tally_spend(records)
    if spend:
        rows = [
            (*key, int(t[0]), t[1], t[2], int(t[3]), int(t[4]))
            for key in sorted(spend)
            for t in (spend[key],)
        ]
        sql = _upsert_sql(db, HourlySpendRollup, _SPEND_KEY_FIELDS, _SPEND_SUM_FIELDS)
        db.cursor().executemany(sql, rows)
