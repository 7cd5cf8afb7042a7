"""`/health` and `/metrics`: whether this instance serves, and how it is doing.

`/health` is public (load balancers ask it without keys) and says only that
the instance serves and whether something needs the operator; why a config
file was rejected (file, line, field) is for callers with a read key.
`/metrics` is Prometheus text, behind a read key unless
`settings.metricsPublic` opens it.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from sanic import Blueprint
from sanic.response import HTTPResponse, raw

from chain429 import __version__
from chain429.requestlog.writer import Telemetry
from chain429.routing.limits import StateStoreUnavailable, shared_store
from chain429.routing.outcome import BlockReason
from chain429.server.auth import Scope, authorize, is_guarded, presented_key
from chain429.server.budgets import budget_report
from chain429.server.context import AppContext, AppRequest
from chain429.server.errors import ApiError
from chain429.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

__all__ = ["DEGRADED_AFTER_DROP_S", "gauges", "health_routes", "health_status"]

# How long /health says "degraded" after a request record was dropped.
DEGRADED_AFTER_DROP_S = 300.0

health_routes = Blueprint("health")


@health_routes.get("/health")
async def health(request: AppRequest) -> HTTPResponse:
    ctx = request.app.ctx
    snapshot, reloader = ctx.snapshot, ctx.reloader
    rejected: dict[str, Any] | None = None
    if reloader.last_error is not None:
        rejected = {"rejected_at": reloader.last_error_at}
        if _is_admin(request):
            rejected["errors"] = reloader.last_error
    problem = state_problem(ctx)
    body: dict[str, Any] = {
        "status": health_status(ctx.telemetry, rejected is not None, problem is not None),
        "version": __version__,
        "uptime_s": round(time.time() - ctx.started_at, 3),
        "config_generation": snapshot.generation,
        "config_loaded_at": snapshot.loaded_at,
        "config_error": rejected,
    }
    if ctx.telemetry is not None:
        body["log"] = ctx.telemetry.health()
    if (shared := shared_store(ctx.state)) is not None:
        body["state_store"] = {
            "kind": "redis",
            "status": "ok" if problem is None else "unavailable",
            "reason": problem,
            "failure_mode": shared.failure,  # open: serving on this instance's own limits
        }
    return raw(json.dumps(body).encode(), 200, None, "application/json")


@health_routes.get("/metrics")
async def metrics(request: AppRequest) -> HTTPResponse:
    ctx = request.app.ctx
    if not ctx.snapshot.config.settings.metrics_public:
        authorize(request, ctx.snapshot, Scope.READ)
    # With Redis away and stateStoreFailure closed, the counts are the last ones
    # known: /metrics is how an operator sees the outage.
    with contextlib.suppress(StateStoreUnavailable):
        blocks = await ctx.state.snapshot(time.time())
        ctx.cooldowns_in_force = len(blocks)
        ctx.breakers_open = sum(1 for block in blocks if block["reason"] == BlockReason.BREAKER)
        report = await budget_report(ctx.snapshot, ctx.state, time.time())
        ctx.budgets_left = {b["client"] or "": b["left_usd"] for b in report["budgets"]}
        ctx.pauses_in_force = len(await ctx.state.pauses())
    return raw(ctx.metrics.render(), 200, None, METRICS_CONTENT_TYPE)


def _is_admin(request: AppRequest) -> bool:
    """Whether the caller may read admin details (a valid key of the read scope)."""
    snapshot = request.app.ctx.snapshot
    if presented_key(request) is None and is_guarded(snapshot, Scope.READ):
        return False
    try:
        authorize(request, snapshot, Scope.READ)
    except ApiError:
        return False
    return True


def health_status(
    telemetry: Telemetry | None, config_rejected: bool, state_unavailable: bool = False
) -> str:
    """`/health`'s `status`: "ok", or "degraded" while something needs the operator.

    The answer stays 200 either way: the proxy is serving, and a load balancer
    should keep it. Degraded: the file on disk is rejected (the last good
    config serves), the request log's database is failing (`log.last_error`;
    records wait in `log.pending`), a record was dropped in the last
    DEGRADED_AFTER_DROP_S, or the shared state store (Redis) cannot be reached
    (the instance serves on its own limits, or refuses: `stateStoreFailure`).
    """
    if config_rejected or state_unavailable:
        return "degraded"
    if telemetry is not None:
        if telemetry.last_error is not None:
            return "degraded"
        dropped_at = telemetry.last_drop_at
        if dropped_at is not None and time.monotonic() - dropped_at < DEGRADED_AFTER_DROP_S:
            return "degraded"
    return "ok"


def state_problem(ctx: AppContext) -> str | None:
    """Why the shared state store is not in use (Redis unreachable), or None."""
    shared = shared_store(ctx.state)
    return None if shared is None else shared.problem


def gauges(ctx: AppContext) -> dict[str, float]:
    """Current-state gauges for /metrics (the cooldown count is refreshed per scrape)."""
    # Metrics registers its collectors (and reads these once) while the context
    # is still being built: the guard and the reloader may not be there yet.
    guard = getattr(ctx, "connection_guard", None)
    reloader = getattr(ctx, "reloader", None)
    return {
        "chain429_active_cooldowns": float(ctx.cooldowns_in_force),
        "chain429_open_breakers": float(ctx.breakers_open),
        "chain429_paused": float(ctx.pauses_in_force),
        "chain429_open_connections": float(guard.open) if guard else 0.0,
        "chain429_request_queue_depth": float(ctx.router.queue_depth) if ctx.serving else 0.0,
        "chain429_config_rejected": float(reloader is not None and reloader.last_error is not None),
        "chain429_state_store_unavailable": float(state_problem(ctx) is not None),
    }
