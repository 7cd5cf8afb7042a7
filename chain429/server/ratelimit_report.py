"""`GET /v1/ratelimits`: what the state store knows, per entry and per bucket.

The answer carries our own view (`entries`, `buckets`, `blocks`: states,
quotas with ISO 8601 resets, sources; `paused`: the pauses people made) and,
under 429chain's field names, its `ratelimits` list, so clients written
against 429chain keep working.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Literal

from sanic import Blueprint
from sanic.response import HTTPResponse, raw

from chain429.routing.limits import Block, StateStore, scope_keys
from chain429.routing.outcome import BlockReason
from chain429.routing.pauses import Pause
from chain429.routing.runtime import Snapshot
from chain429.server.auth import Scope, requires
from chain429.server.context import AppRequest
from chain429.upstream.times import iso

ratelimit_routes = Blueprint("ratelimits")


@ratelimit_routes.get("/v1/ratelimits")
@requires(Scope.PROXY)
async def ratelimits(request: AppRequest) -> HTTPResponse:
    ctx = request.app.ctx
    body = await ratelimit_report(ctx.snapshot, ctx.state, time.time())
    return raw(json.dumps(body).encode(), 200, None, "application/json")


# An entry's state, as /v1/ratelimits, the CLI and the web UI show it.
EntryState = Literal["available", "limited", "cooling", "unhealthy", "probing", "broken", "paused"]

# What a block means for an entry's state.
STATE_OF: dict[BlockReason, EntryState] = {
    BlockReason.COOLDOWN: "cooling",
    BlockReason.QUOTA: "cooling",
    BlockReason.UNSTABLE: "cooling",
    BlockReason.UNHEALTHY: "unhealthy",
    BlockReason.LIMITED: "limited",
    BlockReason.TOKENS: "limited",
    BlockReason.CONCURRENCY: "limited",
    BlockReason.PROBING: "probing",
    BlockReason.BREAKER: "broken",  # its circuit breaker is open, or its probe is in flight
    BlockReason.BUDGET: "limited",  # never a block in force (paid budgets are per request)
    BlockReason.PAUSED: "paused",  # a person paused it: skipped until resumed
}


def pause_view(pause: Pause) -> dict[str, Any]:
    """A pause as the admin API and this report show it."""
    return {**pause.to_dict(), "since": iso(pause.since)}


def _ends(block: Block | None) -> float | None:
    """When a block ends; None for none, or for a pause (it has no end)."""
    return block.until if block is not None and math.isfinite(block.until) else None


def _tightest(quotas: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    known = [q for q in quotas if q["kind"] == kind and q["remaining"] is not None]
    return min(known, key=lambda q: q["remaining"]) if known else None


def _as_429chain(
    provider: str, model: str, block: Block | None, quotas: list[dict[str, Any]], now: float
) -> dict[str, Any]:
    def reset_ms(quota: dict[str, Any] | None) -> int | None:
        if quota is None or quota["reset_at"] is None:
            return None
        return max(0, int((quota["reset_at"] - now) * 1000))  # 429chain: ms from now

    requests, tokens = _tightest(quotas, "requests"), _tightest(quotas, "tokens")
    quota = None
    if quotas:
        quota = {
            "remainingRequests": requests["remaining"] if requests else None,
            "remainingTokens": tokens["remaining"] if tokens else None,
            "resetRequestsMs": reset_ms(requests),
            "resetTokensMs": reset_ms(tokens),
            "lastUpdated": int(now * 1000),
        }
    ends = _ends(block)
    return {
        "provider": provider,
        "model": model,
        "status": "exhausted" if block else "available",
        "cooldownUntil": int(ends * 1000) if ends is not None else None,
        "reason": block.detail if block else "",
        "quota": quota,
    }


async def ratelimit_report(snapshot: Snapshot, state: StateStore, now: float) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    buckets: dict[str, dict[str, Any]] = {}
    compatible: list[dict[str, Any]] = []
    pauses = {pause.key: pause for pause in await state.pauses()}
    for chain in snapshot.chains.values():
        for entry in chain.entries:
            provider_key, _, entry_key = scope_keys(entry)
            pause = pauses.get(provider_key) or pauses.get(entry_key)
            block = await state.check(entry, now)
            quotas = await state.bucket_quotas(entry, now)
            in_flight = await state.in_flight(entry)
            breaker = await state.breaker(entry, now)
            state_now: EntryState = STATE_OF[block.reason] if block else "available"
            if block is None and breaker["state"] == "half_open":
                state_now = "probing"  # the next request (or the one in flight) probes it
            entries.append(
                {
                    "chain": chain.name,
                    "provider": entry.provider_id,
                    "model": entry.model,
                    "bucket": entry.bucket,
                    "state": state_now,
                    "reason": block.detail if block else breaker["reason"],
                    "source": block.source if block else None,
                    "until": iso(ends) if (ends := _ends(block)) is not None else None,
                    "paused": pause_view(pause) if pause is not None else None,
                    "in_flight": in_flight,
                    "breaker": {
                        **breaker,
                        "until": iso(breaker["until"]) if breaker["until"] else None,  # type: ignore[arg-type]
                    },
                }
            )
            buckets[entry.bucket] = {
                "bucket": entry.bucket,
                "provider": entry.provider_id,
                "quotas": [{**q, "reset_at": iso(q["reset_at"])} for q in quotas],  # type: ignore[arg-type]
                "in_flight": in_flight,
            }
            compatible.append(_as_429chain(entry.provider_id, entry.model, block, quotas, now))
    blocks = [{**b, "until": iso(b["until"])} for b in await state.snapshot(now)]  # type: ignore[arg-type]
    return {
        "object": "ratelimits",
        "entries": entries,
        "buckets": list(buckets.values()),
        "blocks": blocks,
        "paused": [pause_view(pause) for pause in pauses.values()],
        "ratelimits": compatible,
    }
