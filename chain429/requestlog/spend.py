"""What answers cost, per provider, chain or client, over any range: `GET /v1/stats/spend`.

A request's cost is computed once, when its answer is over, from the tokens
the provider reported (or estimated ones, then `cost_estimated`) at the
price of the entry that answered (chain429.server.completions), and stored
with it (`requests.cost_usd`; null when the entry has no price). Like the
other aggregates (chain429.requestlog.stats) a range reads the hourly spend
rollup for its whole hours and the raw rows only for the partial hours at
its two ends, so a 30-day report reads hours, not requests, and stays exact
to the millisecond at the edges.

Synchronous, read-only, run on a worker thread; ranges are half-open.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, get_args

from peewee import Case, fn

from chain429.requestlog.params import StatsParamError
from chain429.requestlog.stats import _ordinals, _range_fields, range_parts, read_snapshot
from chain429.requestlog.tables import HourlySpendRollup, RequestRow

__all__ = ["SPEND_BY", "SpendBy", "parse_spend_by", "spend"]

SpendBy = Literal["provider", "chain", "client"]
SPEND_BY: tuple[SpendBy, ...] = get_args(SpendBy)


def parse_spend_by(value: str | None) -> SpendBy:
    """`by`: provider (the default), chain or client."""
    if value is None:
        return "provider"
    for by in SPEND_BY:
        if value == by:
            return by
    raise StatsParamError("by", f"must be one of {', '.join(SPEND_BY)}; got {value!r}")


@dataclass(slots=True)
class _Spend:
    requests: int = 0
    cost_usd: float = 0.0
    estimated_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, row: tuple[Any, ...]) -> None:
        # PostgreSQL sums bigints as numeric (Decimal): int()/float() keep the JSON plain.
        self.requests += int(row[0] or 0)
        self.cost_usd += float(row[1] or 0)
        self.estimated_usd += float(row[2] or 0)
        self.prompt_tokens += int(row[3] or 0)
        self.completion_tokens += int(row[4] or 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "cost_usd": round(self.cost_usd, 9),
            "estimated_usd": round(self.estimated_usd, 9),
            "tokens": {
                "prompt": self.prompt_tokens,
                "completion": self.completion_tokens,
                "total": self.prompt_tokens + self.completion_tokens,
            },
        }


def _raw_part(since_ms: int, until_ms: int, by: SpendBy) -> Iterator[tuple[Any, ...]]:
    R = RequestRow
    cost = R.cost_usd
    query: Any = (
        R.select(
            fn.COALESCE(getattr(R, by), ""),
            fn.COUNT(R.id),
            fn.SUM(cost),
            fn.SUM(Case(None, [(R.cost_estimated == True, cost)], 0.0)),  # noqa: E712
            fn.SUM(fn.COALESCE(R.prompt_tokens, 0)),
            fn.SUM(fn.COALESCE(R.completion_tokens, 0)),
        )
        .where((R.time_ms >= since_ms) & (R.time_ms < until_ms) & cost.is_null(False))
        .group_by(*_ordinals([by]))
        .tuples()
    )
    yield from query


def _rollup_part(first_hour_ms: int, end_hour_ms: int, by: SpendBy) -> Iterator[tuple[Any, ...]]:
    H = HourlySpendRollup
    query: Any = (
        H.select(
            getattr(H, by),
            fn.SUM(H.requests),
            fn.SUM(H.cost_usd),
            fn.SUM(H.estimated_usd),
            fn.SUM(H.prompt_tokens),
            fn.SUM(H.completion_tokens),
        )
        .where((H.hour_ms >= first_hour_ms) & (H.hour_ms < end_hour_ms))
        .group_by(getattr(H, by))
        .tuples()
    )
    yield from query


def _collect(since_ms: int, until_ms: int, by: SpendBy) -> dict[str, _Spend]:
    groups: dict[str, _Spend] = {}

    def take(rows: Iterator[tuple[Any, ...]]) -> None:
        for row in rows:
            if int(row[1] or 0):
                groups.setdefault(str(row[0]), _Spend()).add(row[1:])

    hours, edges = range_parts(since_ms, until_ms)
    if hours:
        take(_rollup_part(*hours, by))
    for edge in edges:
        take(_raw_part(*edge, by))
    return groups


def spend(since_ms: int, until_ms: int, by: SpendBy = "provider") -> dict[str, Any]:
    """What priced answers cost in the range, in total and per `by`, the costliest first.

    `null` names requests without one (no client, say). `estimated_usd` is the
    part of `cost_usd` computed from estimated tokens (the provider reported
    no usage). Requests to unpriced entries are not counted.
    """
    with read_snapshot():
        groups = _collect(since_ms, until_ms, by)
    total = _Spend()
    for group in groups.values():
        total.add(
            (
                group.requests,
                group.cost_usd,
                group.estimated_usd,
                group.prompt_tokens,
                group.completion_tokens,
            )
        )
    rows = [
        {by: name or None, **group.as_dict()}
        for name, group in sorted(groups.items(), key=lambda kv: (-kv[1].cost_usd, kv[0]))
    ]
    return {
        "object": "stats.spend",
        **_range_fields(since_ms, until_ms),
        "by": by,
        **total.as_dict(),
        "data": rows,
    }
