"""The admin API over the request log: `GET /v1/stats/*`.

Handlers only check the caller, parse the query string and hand the question
to `chain429.requestlog.stats` on a worker thread, so a slow query never stalls the event
loop that is relaying other clients' streams. All routes are admin-only: the
log names keys, chains and providers, which a proxy key holder need not see.

Parameters (all optional):

- `/v1/stats/summary`, `/providers`, `/chains`, `/clients` (and one of each):
  `since`, `until`, `endpoint`
- `/v1/stats/endpoints`: `since`, `until`
- `/v1/stats/requests`: `since`, `until`, `chain`, `provider`, `status`,
  `outcome`, `endpoint`, `client` (exact matches), `limit` (1-1000, default 100), `cursor`
- `/v1/stats/requests/<id>`: none
- `/v1/stats/timeseries`: `since`, `until`, `endpoint`, `bucket` (`5m`, `1h`,
  `1d`; from the range when absent: 5m up to 6h, 1h up to 7d, else 1d)
- `/v1/stats/spend`: `since`, `until`, `by` (`provider`, `chain`, `client`;
  default `provider`): what priced answers cost (chain429.requestlog.spend)

`endpoint` (`chat`, `completions`, `embeddings`) counts only the requests of
that proxied route.

`since`/`until` take ISO 8601 (`2026-11-26T10:00:00Z`, `2026-11-26`) or an
age (`24h`, `7d`, `30m`, `90s`); the default is the last 24 hours. An unknown,
repeated or malformed parameter is a 400 `invalid_request_error` whose `param`
names it (being strict catches a misspelt filter that would otherwise be
silently ignored and show unfiltered numbers). With the request log off the
routes answer 503 `request_log_disabled`.

Latency `p50`/`p95` are estimated from histogram buckets (see `chain429.requestlog.stats`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from sanic import Blueprint
from sanic.response import HTTPResponse, raw

from chain429.requestlog import listing, provider_stats, spend, stats
from chain429.requestlog.records import REQUEST_OUTCOMES
from chain429.routing.endpoints import Endpoint
from chain429.server.auth import Scope, requires
from chain429.server.context import AppRequest
from chain429.server.errors import ApiError

_JSON = "application/json"
_RANGE = ("since", "until")
_FILTERED = (*_RANGE, "endpoint")
_REQUEST_FILTERS = (
    "chain",
    "provider",
    "status",
    "outcome",
    "endpoint",
    "client",
    "limit",
    "cursor",
)

stats_routes = Blueprint("stats")


def _params(request: AppRequest, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query string as one value per name; anything unexpected is a 400 naming it."""
    params: dict[str, str] = {}
    # keep_blank_values: `since=` is a mistake worth reporting, not "use the default".
    for name, value in request.get_query_args(keep_blank_values=True):
        if name not in allowed:
            raise ApiError(
                400,
                f"Unknown parameter '{name}'; this route takes: {', '.join(allowed) or 'none'}.",
                param=name,
            )
        if name in params:
            raise ApiError(400, f"Parameter '{name}' is given more than once.", param=name)
        if not value.strip():
            raise ApiError(400, f"Parameter '{name}' is empty.", param=name)
        params[name] = value
    return params


def _status(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        status = int(value)
    except ValueError:
        raise stats.StatsParamError("status", f"must be an integer, got {value!r}") from None
    if not 0 <= status <= 999:  # and a database integer: a huge one would not even bind
        raise stats.StatsParamError("status", f"must be an HTTP status (0 to 999), got {value}")
    return status


def _bad(exc: stats.StatsParamError) -> ApiError:
    return ApiError(400, f"Invalid '{exc.param}': {exc.message}.", param=exc.param)


async def _ask(question: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(question, *args, **kwargs)
    except stats.StatsParamError as exc:
        raise _bad(exc) from None


def _json(body: Any) -> HTTPResponse:
    return raw(json.dumps(body).encode(), 200, None, _JSON)


def _one(answer: dict[str, Any], field: str, name: str) -> HTTPResponse:
    """One row of a per-provider or per-chain answer, with the answer's range."""
    for row in answer["data"]:
        if row.get(field) == name:
            ranged = {k: v for k, v in answer.items() if k not in ("object", "data")}
            return _json({"object": f"stats.{field}", **ranged, **row})
    raise ApiError(
        404,
        f"No requests logged for {field} '{name}' in this range.",
        code="not_found",
        param=f"{field}",
    )


def admit(request: AppRequest, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, once the request log is known to be on.

    Every route is `requires(Scope.READ)`, checked before this: an anonymous
    caller learns nothing, not even a 503 or a 400.
    """
    if request.app.ctx.database is None:
        raise ApiError(
            503,
            "The request log is off; set settings.dbPath or settings.databaseUrl to keep one.",
            code="request_log_disabled",
        )
    return _params(request, allowed)


def time_range(params: dict[str, str]) -> tuple[int, int]:
    try:
        return stats.parse_range(params.get("since"), params.get("until"), time.time())
    except stats.StatsParamError as exc:
        raise _bad(exc) from None


def _one_of(params: dict[str, str], name: str, words: Iterable[str]) -> str | None:
    """The filter `name` asked for, one of `words` (a typo must not read as "none")."""
    value = params.get(name)
    allowed = tuple(words)
    if value is not None and value not in allowed:
        names = ", ".join(allowed)
        raise ApiError(400, f"Invalid '{name}': must be one of {names}.", param=name)
    return value


def endpoint_filter(params: dict[str, str]) -> str | None:
    """The `endpoint` asked for: one the proxy has."""
    return _one_of(params, "endpoint", Endpoint)


def _filtered(request: AppRequest) -> tuple[int, int, str | None]:
    """The range and the endpoint filter of a route that takes both."""
    params = admit(request, _FILTERED)
    return (*time_range(params), endpoint_filter(params))


@stats_routes.get("/v1/stats/summary")
@requires(Scope.READ)
async def stats_summary(request: AppRequest) -> HTTPResponse:
    return _json(await _ask(stats.summary, *_filtered(request)))


@stats_routes.get("/v1/stats/providers")
@requires(Scope.READ)
async def stats_providers(request: AppRequest) -> HTTPResponse:
    return _json(await _ask(provider_stats.providers, *_filtered(request)))


@stats_routes.get("/v1/stats/chains")
@requires(Scope.READ)
async def stats_chains(request: AppRequest) -> HTTPResponse:
    return _json(await _ask(stats.chains, *_filtered(request)))


@stats_routes.get("/v1/stats/endpoints")
@requires(Scope.READ)
async def stats_endpoints(request: AppRequest) -> HTTPResponse:
    return _json(await _ask(stats.endpoints, *time_range(admit(request, _RANGE))))


@stats_routes.get("/v1/stats/clients")
@requires(Scope.READ)
async def stats_clients(request: AppRequest) -> HTTPResponse:
    return _json(await _ask(stats.clients, *_filtered(request)))


@stats_routes.get("/v1/stats/clients/<client_name:str>")
@requires(Scope.READ)
async def stats_client(request: AppRequest, client_name: str) -> HTTPResponse:
    answer = await _ask(stats.clients, *_filtered(request))
    return _one(answer, "client", client_name)


# 429chain's paths for one provider or chain: the same row as in the list.
@stats_routes.get("/v1/stats/providers/<provider_id:str>")
@requires(Scope.READ)
async def stats_provider(request: AppRequest, provider_id: str) -> HTTPResponse:
    answer = await _ask(provider_stats.providers, *_filtered(request))
    return _one(answer, "provider", provider_id)


@stats_routes.get("/v1/stats/chains/<chain_name:str>")
@requires(Scope.READ)
async def stats_chain(request: AppRequest, chain_name: str) -> HTTPResponse:
    answer = await _ask(stats.chains, *_filtered(request))
    return _one(answer, "chain", chain_name)


@stats_routes.get("/v1/stats/timeseries")
@requires(Scope.READ)
async def stats_timeseries(request: AppRequest) -> HTTPResponse:
    params = admit(request, (*_FILTERED, "bucket"))
    since_ms, until_ms = time_range(params)
    bucket, endpoint = params.get("bucket"), endpoint_filter(params)
    return _json(await _ask(stats.timeseries, since_ms, until_ms, bucket, endpoint))


@stats_routes.get("/v1/stats/spend")
@requires(Scope.READ)
async def stats_spend(request: AppRequest) -> HTTPResponse:
    params = admit(request, (*_RANGE, "by"))
    since_ms, until_ms = time_range(params)
    try:
        by = spend.parse_spend_by(params.get("by"))
    except stats.StatsParamError as exc:
        raise _bad(exc) from None
    return _json(await _ask(spend.spend, since_ms, until_ms, by))


@stats_routes.get("/v1/stats/requests")
@requires(Scope.READ)
async def stats_requests(request: AppRequest) -> HTTPResponse:
    params = admit(request, (*_RANGE, *_REQUEST_FILTERS))
    since_ms, until_ms = time_range(params)
    endpoint = endpoint_filter(params)
    try:
        limit = stats.parse_limit(params.get("limit"))
        status = _status(params.get("status"))
        if "cursor" in params:
            stats.decode_cursor(params["cursor"])  # a bad cursor fails before any query
    except stats.StatsParamError as exc:
        raise _bad(exc) from None
    page = await _ask(
        listing.requests,
        since_ms,
        until_ms,
        chain=params.get("chain"),
        provider=params.get("provider"),
        status=status,
        outcome=_one_of(params, "outcome", REQUEST_OUTCOMES),
        endpoint=endpoint,
        client=params.get("client"),
        limit=limit,
        cursor=params.get("cursor"),
    )
    return _json(page)


@stats_routes.get("/v1/stats/requests/<request_id:str>")
@requires(Scope.READ)
async def stats_request(request: AppRequest, request_id: str) -> HTTPResponse:
    admit(request, ())
    detail = await _ask(listing.request_detail, request_id)
    if detail is None:
        raise ApiError(
            404, f"No request '{request_id}' in the log.", code="not_found", param="request_id"
        )
    return _json(detail)
