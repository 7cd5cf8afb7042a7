"""The two hourly rollups the request log writer keeps: tally a batch, merge it in.

`merge_rollups` adds a batch of records to `HourlyRollup` (requests per hour,
chain, provider and outcome, with a latency histogram over
`LATENCY_BUCKETS_MS`) and to `HourlyAttemptRollup` (attempts per hour,
provider, model and outcome; the hour is the request's). It runs inside the
writer's batch transaction (see `chain429.requestlog.writer`), so the rollups never
count a batch the raw rows do not hold, or the other way round.

The rows are inserted through the writer's own bulk insert, passed in as
`insert_rows`. Keys are clipped to their columns' widths exactly as the raw
rows are (`clip`), so both always name the same chain, provider and model.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
from typing import Any, Protocol, cast

import peewee

from chain429.requestlog.database import is_postgres
from chain429.requestlog.records import RequestRecord
from chain429.requestlog.tables import LATENCY_BUCKETS_MS, HourlyAttemptRollup, HourlyRollup
from chain429.upstream.times import HOUR_MS


class RowInserter(Protocol):
    """The writer's bulk insert: `ignore` skips rows whose key is already there."""

    def __call__(
        self, model: Any, fields: list[Any], rows: list[tuple[Any, ...]], ignore: bool = False
    ) -> None: ...


def fields_of(model: Any, names: list[str]) -> list[Any]:
    return [model._meta.fields[name] for name in names]


def column_limits(fields: list[Any]) -> list[int | None]:
    return [f.max_length if isinstance(f, peewee.CharField) else None for f in fields]


def clip(values: tuple[Any, ...], limits: list[int | None]) -> tuple[Any, ...]:
    """Cut strings to their column's width: PostgreSQL rejects a longer value, and one
    over-long model name must not cost the other records of its batch."""
    return tuple(
        v[:n] if n is not None and isinstance(v, str) and len(v) > n else v
        for v, n in zip(values, limits, strict=True)
    )


_ROLLUP_KEY_COLUMNS = ["hour_ms", "chain", "provider", "outcome"]
_ROLLUP_SUM_COLUMNS = [
    "requests",
    "errors",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "latency_sum_ms",
    "latency_histogram",
]

_ATTEMPT_ROLLUP_KEY_COLUMNS = ["hour_ms", "provider", "model", "outcome"]

_ROLLUP_KEY_FIELDS = fields_of(HourlyRollup, _ROLLUP_KEY_COLUMNS)
_ROLLUP_FIELDS = fields_of(HourlyRollup, _ROLLUP_KEY_COLUMNS + _ROLLUP_SUM_COLUMNS)
_rollup_id: Any = HourlyRollup._meta.primary_key  # the implicit auto id
_ATTEMPT_ROLLUP_KEY_FIELDS = fields_of(HourlyAttemptRollup, _ATTEMPT_ROLLUP_KEY_COLUMNS)
_ATTEMPT_ROLLUP_FIELDS = fields_of(
    HourlyAttemptRollup, [*_ATTEMPT_ROLLUP_KEY_COLUMNS, "count", "latency_sum_ms"]
)
_attempt_rollup_id: Any = HourlyAttemptRollup._meta.primary_key

_ROLLUP_KEY_LIMITS = column_limits(_ROLLUP_KEY_FIELDS)
_ATTEMPT_ROLLUP_KEY_LIMITS = column_limits(_ATTEMPT_ROLLUP_KEY_FIELDS)


def latency_bucket(latency_ms: float) -> int:
    """Index of the histogram bucket for a latency: the first bound it is at or below."""
    return bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)


RollupKey = tuple[int, str, str, str]
AttemptKey = tuple[int, str, str, str]  # hour_ms, provider, model, outcome


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
                (time_ms - time_ms % HOUR_MS, r.chain or "", r.provider or "", r.outcome),
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
    tallies: dict[AttemptKey, list[float]] = {}
    for r in records:
        time_ms = int(r.started_at * 1000)
        hour_ms = time_ms - time_ms % HOUR_MS
        for a in r.trail:
            # Clipped like the attempt rows themselves, so the keys match them.
            key = cast(
                AttemptKey,
                clip((hour_ms, a.provider, a.model, a.outcome), _ATTEMPT_ROLLUP_KEY_LIMITS),
            )
            tally = tallies.get(key)
            if tally is None:
                tally = tallies[key] = [0, 0.0]
            tally[0] += 1
            tally[1] += a.latency_ms or 0.0
    return tallies


def _merged_histogram(stored: str, added: list[int]) -> str:
    try:
        current = [int(x) for x in json.loads(stored)]
    except (ValueError, TypeError):
        current = []  # the column default "[]", or damage: start again from zero
    current += [0] * (len(added) - len(current))
    return json.dumps([c + a for c, a in zip(current, added, strict=False)] + current[len(added) :])


def merge_rollups(
    db: peewee.Database, records: list[RequestRecord], insert_rows: RowInserter
) -> None:
    """Add the records to both hourly rollups, in the batch's transaction.

    Inserting blank rows (ignoring conflicts) and then reading them locked
    makes the read-add-write safe even when several chain429 instances
    share one PostgreSQL: FOR UPDATE there, the IMMEDIATE write lock on
    SQLite. Keys are sorted, and the request rollup always goes first, so
    two writers lock rows in the same order.
    """
    _merge_request_rollup(db, _tally(records), insert_rows)
    _merge_attempt_rollup(db, _tally_attempts(records), insert_rows)


def _merge_request_rollup(
    db: peewee.Database, tallies: dict[RollupKey, _Tally], insert_rows: RowInserter
) -> None:
    if not tallies:
        return
    keys = sorted(tallies)
    blank = json.dumps([0] * (len(LATENCY_BUCKETS_MS) + 1))
    rows = [(*key, 0, 0, 0, 0, 0, 0.0, blank) for key in keys]
    insert_rows(HourlyRollup, _ROLLUP_FIELDS, rows, ignore=True)
    hours = sorted({key[0] for key in keys})
    query = HourlyRollup.select().where(HourlyRollup.hour_ms.in_(hours)).order_by(_rollup_id)
    if is_postgres(db):
        query = query.for_update()
    for row in query:
        tally = tallies.get((row.hour_ms, row.chain, row.provider, row.outcome))
        if tally is None:
            continue
        HourlyRollup.update(
            requests=row.requests + tally.requests,
            errors=row.errors + tally.errors,
            attempts=row.attempts + tally.attempts,
            prompt_tokens=row.prompt_tokens + tally.prompt_tokens,
            completion_tokens=row.completion_tokens + tally.completion_tokens,
            latency_sum_ms=row.latency_sum_ms + tally.latency_sum_ms,
            latency_histogram=_merged_histogram(row.latency_histogram, tally.histogram),
        ).where(_rollup_id == row.get_id()).execute()  # type: ignore[no-untyped-call]  # peewee: no annotations


def _merge_attempt_rollup(
    db: peewee.Database, tallies: dict[AttemptKey, list[float]], insert_rows: RowInserter
) -> None:
    if not tallies:
        return
    keys = sorted(tallies)
    rows = [(*key, 0, 0.0) for key in keys]
    insert_rows(HourlyAttemptRollup, _ATTEMPT_ROLLUP_FIELDS, rows, ignore=True)
    H = HourlyAttemptRollup
    hours = sorted({key[0] for key in keys})
    query = H.select().where(H.hour_ms.in_(hours)).order_by(_attempt_rollup_id)
    if is_postgres(db):
        query = query.for_update()
    for row in query:
        tally = tallies.get((row.hour_ms, row.provider, row.model, row.outcome))
        if tally is None:
            continue
        H.update(
            count=row.count + int(tally[0]),
            latency_sum_ms=row.latency_sum_ms + tally[1],
        ).where(_attempt_rollup_id == row.get_id()).execute()  # type: ignore[no-untyped-call]  # peewee: no annotations
