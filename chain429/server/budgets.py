"""`GET /v1/admin/budgets`: what each paid budget has left today.

The CLI's `status`, the web UI's overview and the metrics' remaining-budget
gauge read the same report: `settings.paidBudgetUsdPerDay` first, then each
client's `paidBudgetUsdPerDay`, each with what was spent today, what paid
calls in flight reserve, what is left, and when the day resets (midnight in
`settings.timeZone`). It names clients, so it is an admin read, not part of
`/health` (public) or `/v1/ratelimits` (proxy keys).
"""

from __future__ import annotations

import json
import time
from typing import Any

from sanic import Blueprint
from sanic.response import HTTPResponse, raw

from chain429.routing.budget import CLIENT_PREFIX, GLOBAL, BudgetCap, BudgetDay
from chain429.routing.limits import StateStore
from chain429.routing.runtime import Snapshot
from chain429.server.auth import Scope, requires
from chain429.server.context import AppRequest
from chain429.upstream.times import iso

__all__ = ["budget_report", "budget_routes", "client_budget"]

budget_routes = Blueprint("budgets")


def every_cap(snapshot: Snapshot) -> list[BudgetCap]:
    """Every budget the config sets: everybody's, then each client's."""
    caps = []
    if snapshot.paid_budget_usd is not None:
        caps.append(BudgetCap(GLOBAL, snapshot.paid_budget_usd))
    for name, cap in snapshot.client_budgets_usd.items():
        caps.append(BudgetCap(CLIENT_PREFIX + name, cap))
    return caps


def _shown(budget: dict[str, Any]) -> dict[str, Any]:
    return {**budget, "resets_at": iso(budget["resets_at"])}


async def budget_report(snapshot: Snapshot, state: StateStore, now: float) -> dict[str, Any]:
    settings = snapshot.config.settings
    day = BudgetDay.of(now, settings.zone)
    caps = every_cap(snapshot)
    budgets = await state.spend_report(caps, day, now) if caps else []
    return {
        "object": "budgets",
        "time_zone": settings.time_zone,
        "day": day.label,
        "resets_at": iso(day.ends_at),
        "budgets": [_shown(b) for b in budgets],
    }


async def client_budget(
    snapshot: Snapshot, state: StateStore, client: str, now: float
) -> dict[str, Any] | None:
    """A client's own paid budget today, as the report shows it; None without one."""
    cap = snapshot.client_budgets_usd.get(client)
    if cap is None:
        return None
    day = BudgetDay.of(now, snapshot.config.settings.zone)
    (budget,) = await state.spend_report([BudgetCap(CLIENT_PREFIX + client, cap)], day, now)
    return _shown(budget)


@budget_routes.get("/v1/admin/budgets")
@requires(Scope.READ)
async def budgets(request: AppRequest) -> HTTPResponse:
    ctx = request.app.ctx
    body = await budget_report(ctx.snapshot, ctx.state, time.time())
    return raw(json.dumps(body).encode(), 200, None, "application/json")
