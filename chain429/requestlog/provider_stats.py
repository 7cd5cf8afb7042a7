"""Per provider: the requests each answered, and every attempt made on it.

A request is attributed to the one provider that answered it (`requests.provider`),
which `chain429.requestlog.stats.collect` counts like any other dimension. Attempts
are another table: every call and skip of every request's trail, so one request
counts against each provider it tried. They are read like the requests: the
attempt rollup (`HourlyAttemptRollup`) for the whole hours of a range, whose hours
are those of the requests the attempts belong to, and the trails of the edge
hours' requests, both their attempt rows (calls, and skips logged before
migration 8) and the skips column (`requests.skips`, since).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import peewee
from peewee import fn

from chain429.requestlog.database import is_postgres
from chain429.requestlog.records import is_call
from chain429.requestlog.stats import (
    Totals,
    _database,
    _ordinals,
    _range_fields,
    collect,
    range_parts,
    read_snapshot,
)
from chain429.requestlog.tables import AttemptRow, HourlyAttemptRollup, RequestRow

__all__ = ["attempt_outcomes", "providers"]

_STAR = peewee.SQL("*")


def _raw_attempts(
    since_ms: int, until_ms: int, endpoint: str | None = None
) -> Iterator[tuple[Any, ...]]:
    """(provider, outcome, count) from the trails of the requests in the range.

    Only ever asked for less than two hours (the edges around the rollup's
    whole hours), so the way in is the requests' time index, then each one's
    trail by `request_id`. PostgreSQL would rather hash-join a sequential scan
    of every attempt logged (40 ms for one edge hour at 190,000 attempts, and
    growing with the table, against 3 ms): a LATERAL subquery, fenced with
    OFFSET 0 so the planner cannot flatten it back into a join, makes it look
    each trail up. SQLite joins that way by itself.
    """
    A, R = AttemptRow, RequestRow
    in_range = (R.time_ms >= since_ms) & (R.time_ms < until_ms)
    if endpoint is not None:
        in_range &= R.endpoint == endpoint
    query: Any
    if is_postgres(_database()):
        trail = A.select(A.provider, A.outcome).where(A.request == R.id).offset(0).alias("trail")
        query = R.select(trail.c.provider, trail.c.outcome, fn.COUNT(_STAR))
        query = query.join(trail, peewee.JOIN.LATERAL).where(in_range)
    else:
        query = A.select(A.provider, A.outcome, fn.COUNT(_STAR)).join(R).where(in_range)
    yield from query.group_by(*_ordinals([A.provider, A.outcome])).tuples()
    yield from _raw_skips(since_ms, until_ms, endpoint)


def _raw_skips(since_ms: int, until_ms: int, endpoint: str | None) -> Iterator[tuple[Any, ...]]:
    """(provider, outcome, count) of the skips in the `requests.skips` column (migration
    8) of the requests in the range, unnested by the database's own JSON functions."""
    if is_postgres(_database()):
        step = "jsonb_array_elements(r.skips::jsonb) AS s"
        provider, outcome = "s.value->>1", "s.value->>3"
    else:
        step = "json_each(r.skips) AS s"
        provider, outcome = "json_extract(s.value, '$[1]')", "json_extract(s.value, '$[3]')"
    param = _database().param
    where = f"r.time_ms >= {param} AND r.time_ms < {param} AND r.skips IS NOT NULL"
    params: list[Any] = [since_ms, until_ms]
    if endpoint is not None:
        where += f" AND r.endpoint = {param}"
        params.append(endpoint)
    sql = (
        f'SELECT {provider}, {outcome}, COUNT(*) FROM "requests" AS r CROSS JOIN {step} '
        f"WHERE {where} GROUP BY 1, 2"
    )
    yield from _database().execute_sql(sql, params).fetchall()


def _rollup_attempts(
    first_hour_ms: int, end_hour_ms: int, endpoint: str | None = None
) -> Iterator[tuple[Any, ...]]:
    """(provider, outcome, count) from the attempt rollup's whole hours."""
    H = HourlyAttemptRollup
    in_range = (H.hour_ms >= first_hour_ms) & (H.hour_ms < end_hour_ms)
    if endpoint is not None:
        in_range &= H.endpoint == endpoint
    query: Any = (
        H.select(H.provider, H.outcome, fn.SUM(H.count))
        .where(in_range)
        .group_by(H.provider, H.outcome)
        .tuples()
    )
    yield from query


def attempt_outcomes(
    since_ms: int, until_ms: int, endpoint: str | None = None
) -> dict[str, dict[str, int]]:
    """Attempts per provider and outcome token, for the requests in the range (of
    `endpoint`, when given)."""
    outcomes: dict[str, dict[str, int]] = {}

    def take(rows: Iterator[tuple[Any, ...]]) -> None:
        for provider, outcome, count in rows:
            if count:  # PostgreSQL's SUM is a Decimal; int() keeps the JSON plain
                by_outcome = outcomes.setdefault(provider, {})
                by_outcome[outcome] = by_outcome.get(outcome, 0) + int(count)

    hours, edges = range_parts(since_ms, until_ms)
    if hours:
        take(_rollup_attempts(*hours, endpoint))
    for edge in edges:
        take(_raw_attempts(*edge, endpoint))
    return outcomes


def providers(since_ms: int, until_ms: int, endpoint: str | None = None) -> dict[str, Any]:
    """Per provider: the requests it answered, and every attempt made on it.

    A request is attributed to the provider that answered it (`requests.provider`);
    one nobody answered is listed under `provider: null`, never under the last
    provider tried. Attempts, skips included, come from the attempt trails of
    the requests in the range (the attempt rollup for whole hours).
    """
    with read_snapshot():
        answered = collect(since_ms, until_ms, ("provider",), endpoint=endpoint)
        outcomes = attempt_outcomes(since_ms, until_ms, endpoint)
    names = {key[0] for key in answered} | set(outcomes)
    rows = []
    for name in sorted(names, key=lambda n: (n == "", n)):
        totals = answered.get((name,), Totals())
        by_outcome = outcomes.get(name, {})
        skips = sum(n for token, n in by_outcome.items() if token.startswith("skip:"))
        rows.append(
            {
                "provider": name or None,
                "requests": totals.requests,
                "successes": totals.successes,
                "errors": totals.errors,
                "tokens": totals.tokens(),
                "latency_ms": totals.latency(),
                "attempts": {
                    "calls": sum(n for token, n in by_outcome.items() if is_call(token)),
                    "skips": skips,
                    "outcomes": dict(sorted(by_outcome.items())),
                },
            }
        )
    return {
        "object": "stats.providers",
        **_range_fields(since_ms, until_ms, endpoint),
        "data": rows,
    }
