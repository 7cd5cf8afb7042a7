"""The request log's rows as they were logged: a page of requests, one request and its trail.

Where chain429.requestlog.stats answers questions about many requests at
once (from the rollups and the edges of a range), this module hands out the
rows themselves: `requests` pages through them newest first behind a cursor
that never shifts or repeats a page while new rows arrive, and
`request_detail` gives one request with every attempt of its trail, in chain
order. Both read one consistent snapshot (`stats.read_snapshot`).
"""

from __future__ import annotations

from typing import Any

from chain429.requestlog.params import DEFAULT_LIMIT, decode_cursor, encode_cursor, parse_limit
from chain429.requestlog.records import decode_skips
from chain429.requestlog.stats import _range_fields, read_snapshot
from chain429.requestlog.tables import AttemptRow, RequestRow
from chain429.upstream.times import iso_ms as iso

__all__ = ["NO_CLIENT", "request_detail", "requests"]

# The `client` filter that picks the requests sent without a client key (`apiKeys`,
# keyless, refused keys): no client name can be it (a name starts with a letter or digit).
NO_CLIENT = "-"

_ATTEMPT_ID = AttemptRow._meta.primary_key  # peewee's implicit auto id; ties keep insert order

# Every column, in declaration order: the list page and the detail page show the same
# fields. The skips are steps of the detail's trail, not a field.
_REQUEST_FIELDS = tuple(f.name for f in RequestRow._meta.sorted_fields if f.name != "skips")


def _request_dict(row: RequestRow) -> dict[str, Any]:
    out = {name: getattr(row, name) for name in _REQUEST_FIELDS}
    out["stream"] = bool(out["stream"])
    out["tokens_estimated"] = bool(out["tokens_estimated"])
    out["cost_estimated"] = bool(out["cost_estimated"])
    out["time"] = iso(row.time_ms)
    return out


def requests(
    since_ms: int,
    until_ms: int,
    *,
    chain: str | None = None,
    provider: str | None = None,
    status: int | None = None,
    outcome: str | None = None,
    endpoint: str | None = None,
    client: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Logged requests, newest first, `limit` per page; pass `next_cursor` back for the next.

    `client` is a client's name, or NO_CLIENT for the requests sent without one.

    The cursor is the (time, id) of the last row handed out, so rows logged
    while a client pages never shift or repeat a page.
    """
    limit = parse_limit(limit)
    query = RequestRow.select().where(
        (RequestRow.time_ms >= since_ms) & (RequestRow.time_ms < until_ms)
    )
    if cursor:
        after_ms, after_id = decode_cursor(cursor)
        # The plain `<=` lets the database use the time index; the OR breaks ties by id.
        query = query.where(
            (RequestRow.time_ms <= after_ms)
            & (
                (RequestRow.time_ms < after_ms)
                | ((RequestRow.time_ms == after_ms) & (RequestRow.id < after_id))
            )
        )
    for column, value in (
        (RequestRow.chain, chain),
        (RequestRow.provider, provider),
        (RequestRow.status, status),
        (RequestRow.outcome, outcome),
        (RequestRow.endpoint, endpoint),
        (RequestRow.client, None if client == NO_CLIENT else client),
    ):
        if value is not None:
            query = query.where(column == value)
    if client == NO_CLIENT:
        query = query.where(RequestRow.client.is_null())
    with read_snapshot():
        rows = list(
            query.order_by(RequestRow.time_ms.desc(), RequestRow.id.desc()).limit(limit + 1)
        )
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if rows else None
    return {
        "object": "list",
        **_range_fields(since_ms, until_ms),
        "data": [_request_dict(row) for row in rows],
        "has_more": more,
        "next_cursor": encode_cursor(last.time_ms, last.id) if more and last else None,
    }


def request_detail(request_id: str) -> dict[str, Any] | None:
    """One request and its attempt trail in chain order, or None if it is not logged."""
    with read_snapshot():
        row = RequestRow.get_or_none(RequestRow.id == request_id)
        if row is None:
            return None
        calls = list(
            AttemptRow.select()
            .where(AttemptRow.request == request_id)
            .order_by(AttemptRow.order, _ATTEMPT_ID)
        )
    # Skips logged since migration 8 are in the request's row; sorted() is stable,
    # so steps of one position keep their order (calls after their position's skips).
    steps: list[Any] = [*decode_skips(row.skips), *calls]
    trail = sorted(steps, key=lambda step: step.order)
    out = {"object": "stats.request", **_request_dict(row)}
    out["trail"] = [
        {
            "order": a.order,
            "provider": a.provider,
            "model": a.model,
            "outcome": a.outcome,
            "status": a.status,
            "latency_ms": a.latency_ms,
            "cooldown_ms": a.cooldown_ms,
            "reason": a.reason,
        }
        for a in trail
    ]
    return out
