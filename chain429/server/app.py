"""The Sanic application: the app factory and its routes.

Handlers stay thin: authenticate, hand the work to the module that owns it
(completions, stats), send the reply. Every error leaves in OpenAI's shape so
OpenAI SDKs raise their usual exception classes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from sanic import Request, Sanic
from sanic.exceptions import RequestCancelled, SanicException
from sanic.handlers import ErrorHandler
from sanic.response import HTTPResponse, raw

from chain429 import __version__
from chain429.config.model import Config
from chain429.requestlog.persist import StatePersister
from chain429.requestlog.writer import Telemetry
from chain429.routing.limits import BREAKER, MemoryStateStore, StateStore
from chain429.routing.router import Router
from chain429.routing.runtime import Snapshot, build_snapshot
from chain429.server.admin import register_admin_routes
from chain429.server.auth import Scope, authorize, is_guarded, presented_key
from chain429.server.completions import JSON, handle_chat
from chain429.server.connections import ConnectionGuard
from chain429.server.errors import ApiError
from chain429.server.guard import JSON_BODY, add_cors_headers, guard
from chain429.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from chain429.server.metrics import Metrics
from chain429.server.openapi import register_openapi_route
from chain429.server.ratelimit_report import ratelimit_report
from chain429.server.reloader import Reloader
from chain429.server.stats_routes import register_stats_routes
from chain429.server.web_ui import register_web_ui
from chain429.upstream.client import Upstream
from chain429.upstream.openai_error import error_body

log = logging.getLogger("chain429")

_app_numbers = itertools.count(1)

# How long /health says "degraded" after a request record was dropped.
DEGRADED_AFTER_DROP_S = 300.0


class OpenAIErrorHandler(ErrorHandler):
    """Sanic's own errors (404, 405, 413, bad framing) in OpenAI's error shape too."""

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        if isinstance(exception, RequestCancelled):
            # The client went away; the upstream call was cancelled with it.
            log.debug("client disconnected: %s %s", request.method, request.path)
            return raw(b"", 499, None, JSON)
        if isinstance(exception, ApiError):
            return raw(exception.body(), exception.status, exception.headers, JSON)
        if isinstance(exception, SanicException):
            status = exception.status_code
            error = ApiError(status, str(exception) or "request failed", code=_code_for(status))
            headers = dict(exception.headers or {})
            if status == 405:  # name the methods that would work, as HTTP asks
                headers["Allow"] = _allowed_methods(request)
            return raw(error.body(), status, headers, JSON)
        # Never echo the exception: it might carry a provider key or a URL.
        log.error("internal error on %s %s", request.method, request.path, exc_info=exception)
        return raw(error_body("internal error", "server_error", "internal_error"), 500, None, JSON)


def _allowed_methods(request: Request) -> str:
    """The methods the path has routes for (Sanic names them only for some routes)."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        try:
            request.app.router.get(request.path, method, request.headers.get("host"))
        except SanicException:
            continue
        allowed.append(method)
    return ", ".join(allowed)


def _code_for(status: int) -> str | None:
    return {
        404: "not_found",
        405: "method_not_allowed",
        408: "request_timeout",
        413: "request_too_large",
    }.get(status)


def _json(body: Any, status: int = 200) -> HTTPResponse:
    return raw(json.dumps(body).encode(), status, None, JSON)


def create_app(
    config: Config,
    *,
    config_path: Path | None = None,
    state: StateStore | None = None,
    telemetry: Telemetry | None = None,
    name: str | None = None,
) -> Sanic:
    """Build the Sanic app for one config; nothing listens until it is served.

    `telemetry` receives each finished request record (`submit(record)`); None
    keeps no request log.
    """
    app = Sanic(name or f"chain429-{next(_app_numbers)}", configure_logging=False)
    app.error_handler = OpenAIErrorHandler()
    app.config.REQUEST_MAX_SIZE = config.settings.max_body_bytes
    app.config.ACCESS_LOG = config.settings.access_log
    app.config.MOTD = False
    # Touchup rewrites Sanic's shared protocol classes per app and breaks on a
    # second app in one process (tests, embedding); it saves little for a proxy.
    app.config.TOUCHUP = False
    # Sanic cuts a response after 60 s without a byte sent. chain429 enforces its
    # own deadlines (per entry, first token, stream idle, queue), and a waterfall
    # of slow entries or a long stream may rightly take longer than that.
    app.config.RESPONSE_TIMEOUT = 24 * 3600
    app.ctx.snapshot = build_snapshot(config)
    app.ctx.config_path = config_path
    # Where the server listens (set again by whoever binds it): an edit or a
    # reload that would leave a non-loopback server without keys is refused.
    app.ctx.bind_host = config.settings.host
    app.ctx.started_at = time.time()
    app.ctx.state = state or MemoryStateStore()
    app.ctx.telemetry = telemetry
    app.ctx.database = getattr(telemetry, "database", None)
    app.ctx.cooldowns_in_force = 0
    app.ctx.breakers_open = 0
    app.ctx.draining = False
    app.ctx.metrics = Metrics(lambda: _gauges(app), telemetry)
    app.ctx.connection_guard = ConnectionGuard(app.ctx.metrics)
    app.ctx.reloader = Reloader(app, config_path)
    app.on_request(guard)
    app.on_response(add_cors_headers)

    @app.before_server_start
    async def open_upstream(app: Sanic) -> None:
        settings = app.ctx.snapshot.config.settings
        app.ctx.upstream = Upstream(
            connect_timeout_s=settings.connect_timeout_ms / 1000,
            allowed_private=lambda: app.ctx.snapshot.config.settings.allow_private_upstreams,
        )
        app.ctx.router = Router(app.ctx.upstream, app.ctx.state)

        if app.ctx.telemetry is not None:
            app.ctx.telemetry.start()

        # Cooldowns survive a restart: with a database (the request log's) and
        # the memory store, restore the saved state before the first request and
        # keep saving it. A shared store (Redis) keeps its own state.
        app.ctx.persister = None
        if app.ctx.database is not None and isinstance(app.ctx.state, MemoryStateStore):
            app.ctx.persister = StatePersister(app.ctx.state, app.ctx.database)
            await asyncio.to_thread(app.ctx.persister.load)
            app.ctx.persister.start()

    @app.after_server_start
    async def watch_config(app: Sanic) -> None:
        reloader: Reloader = app.ctx.reloader
        reloader.start_watching()
        # SIGHUP reloads too, as daemons do; signal handlers need the main thread.
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP"):
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(
                signal.SIGHUP, lambda: loop.create_task(reloader.reload(force=True))
            )

    @app.before_server_stop
    async def drain(app: Sanic) -> None:
        await app.ctx.reloader.stop_watching()
        # From now on every answer closes its connection, so clients on keep-alive
        # connections move on and the graceful stop is not held open by them.
        app.ctx.draining = True
        app.ctx.router.queues.close()  # queued requests leave with 503 queue_shutdown

    @app.after_server_stop
    async def close_upstream(app: Sanic) -> None:
        await app.ctx.upstream.aclose()
        if app.ctx.persister is not None:
            # Requests are done: save the final state, before telemetry lets go of the database.
            await app.ctx.persister.stop()
        if app.ctx.telemetry is not None:
            # In-flight requests are done by now: write every record before exiting.
            await asyncio.to_thread(app.ctx.telemetry.stop)

    @app.get("/health")
    async def health(request: Request) -> HTTPResponse:
        """Public: whether this instance serves. Why a config was rejected (file,
        line, field) is for admin callers: the public answer says only when."""
        snapshot: Snapshot = app.ctx.snapshot
        reloader: Reloader = app.ctx.reloader
        rejected: dict[str, Any] | None = None
        if reloader.last_error is not None:
            rejected = {"rejected_at": reloader.last_error_at}
            if _is_admin(request, snapshot):
                rejected["errors"] = reloader.last_error
        telemetry: Telemetry | None = app.ctx.telemetry
        body: dict[str, Any] = {
            "status": health_status(telemetry, rejected is not None),
            "version": __version__,
            "uptime_s": round(time.time() - app.ctx.started_at, 3),
            "config_generation": snapshot.generation,
            "config_loaded_at": snapshot.loaded_at,
            "config_error": rejected,
        }
        if telemetry is not None:
            body["log"] = telemetry.health()
        return _json(body)

    @app.get("/metrics")
    async def metrics(request: Request) -> HTTPResponse:
        snapshot: Snapshot = app.ctx.snapshot
        if not snapshot.config.settings.metrics_public:
            authorize(request, snapshot, Scope.READ)
        blocks = await app.ctx.state.snapshot(time.time())
        app.ctx.cooldowns_in_force = len(blocks)
        app.ctx.breakers_open = sum(1 for block in blocks if block["reason"] == BREAKER)
        return raw(app.ctx.metrics.render(), 200, None, METRICS_CONTENT_TYPE)

    @app.get("/v1/models")
    async def models(request: Request) -> HTTPResponse:
        snapshot: Snapshot = app.ctx.snapshot
        authorize(request, snapshot, Scope.PROXY)
        return raw(snapshot.models_body, 200, None, JSON)

    @app.get("/v1/ratelimits")
    async def ratelimits(request: Request) -> HTTPResponse:
        snapshot: Snapshot = app.ctx.snapshot
        authorize(request, snapshot, Scope.PROXY)
        return _json(await ratelimit_report(snapshot, app.ctx.state, time.time()))

    @app.post("/v1/chat/completions", ctx_body=JSON_BODY)
    async def chat_completions(request: Request) -> HTTPResponse | None:
        return await handle_chat(app, request)

    register_stats_routes(app, authorize)
    register_openapi_route(app)
    register_admin_routes(app)
    register_web_ui(app)

    return app


def _is_admin(request: Request, snapshot: Snapshot) -> bool:
    """Whether the caller may read admin details (a valid key of the read scope)."""
    if presented_key(request) is None and is_guarded(snapshot, Scope.READ):
        return False
    try:
        authorize(request, snapshot, Scope.READ)
    except ApiError:
        return False
    return True


def health_status(telemetry: Telemetry | None, config_rejected: bool) -> str:
    """`/health`'s `status`: "ok", or "degraded" while something needs the operator.

    The answer stays 200 either way: the proxy is serving, and a load balancer
    should keep it. Degraded: the file on disk is rejected (the last good
    config serves), the request log's database is failing (`log.last_error`;
    records wait in `log.pending`), or a record was dropped in the last
    DEGRADED_AFTER_DROP_S.
    """
    if config_rejected:
        return "degraded"
    if telemetry is not None:
        if telemetry.last_error is not None:
            return "degraded"
        dropped_at = telemetry.last_drop_at
        if dropped_at is not None and time.monotonic() - dropped_at < DEGRADED_AFTER_DROP_S:
            return "degraded"
    return "ok"


def _gauges(app: Sanic) -> dict[str, float]:
    """Current-state gauges for /metrics (the cooldown count is refreshed per scrape)."""
    router = getattr(app.ctx, "router", None)  # absent until the server starts
    guard = getattr(app.ctx, "connection_guard", None)  # absent while Metrics registers
    reloader = getattr(app.ctx, "reloader", None)  # absent while Metrics registers
    return {
        "chain429_active_cooldowns": float(app.ctx.cooldowns_in_force),
        "chain429_open_breakers": float(app.ctx.breakers_open),
        "chain429_open_connections": float(guard.open) if guard else 0.0,
        "chain429_request_queue_depth": float(router.queue_depth) if router else 0.0,
        "chain429_config_rejected": float(reloader is not None and reloader.last_error is not None),
    }
