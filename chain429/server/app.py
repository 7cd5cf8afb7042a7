"""The Sanic application: the factory, its lifecycle and its error handler.

The routes live in Blueprints beside the module that owns their work (health,
completions, stats_routes, admin, budgets, client_routes, steering, openapi,
web_ui); each declares its key scope with `auth.requires`. The app carries a typed `AppContext`
(`server/context.py`). Every error leaves in OpenAI's shape so OpenAI SDKs
raise their usual exception classes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import threading
from pathlib import Path

from sanic import Request, Sanic
from sanic.exceptions import RequestCancelled, SanicException
from sanic.handlers import ErrorHandler
from sanic.response import HTTPResponse, raw

from chain429.config.model import Config
from chain429.requestlog.persist import StatePersister
from chain429.requestlog.writer import Telemetry
from chain429.routing.limits import StateStore, StateStoreUnavailable, shared_store
from chain429.routing.memory_store import MemoryStateStore
from chain429.routing.runtime import build_snapshot
from chain429.server.admin import admin_routes
from chain429.server.budgets import budget_routes
from chain429.server.client_routes import client_routes
from chain429.server.completions import JSON, proxy_routes
from chain429.server.connections import ConnectionGuard
from chain429.server.context import App, AppContext
from chain429.server.errors import ApiError
from chain429.server.guard import add_cors_headers, guard
from chain429.server.health import gauges, health_routes
from chain429.server.instances import Heartbeat, instance_routes
from chain429.server.metrics import Metrics
from chain429.server.openapi import openapi_routes
from chain429.server.ratelimit_report import ratelimit_routes
from chain429.server.reloader import Reloader
from chain429.server.serving import open_state_store
from chain429.server.stats_routes import stats_routes
from chain429.server.steering import steering_routes
from chain429.server.web_ui import web_ui_routes
from chain429.upstream.client import Upstream
from chain429.upstream.openai_error import error_body

log = logging.getLogger("chain429")

_app_numbers = itertools.count(1)


class OpenAIErrorHandler(ErrorHandler):
    """Sanic's own errors (404, 405, 413, bad framing) in OpenAI's error shape too."""

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        if isinstance(exception, RequestCancelled):
            # The client went away; the upstream call was cancelled with it.
            log.debug("client disconnected: %s %s", request.method, request.path)
            return raw(b"", 499, None, JSON)
        if isinstance(exception, ApiError):
            return raw(exception.body(), exception.status, exception.headers, JSON)
        if isinstance(exception, StateStoreUnavailable):
            error = ApiError(
                503,
                "The shared rate-limit state store is unreachable and settings."
                "stateStoreFailure is `closed`: requests are refused until it is back.",
                code="state_store_unavailable",
                headers={"Retry-After": "1"},
            )
            return raw(error.body(), 503, error.headers, JSON)
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


def create_app(
    config: Config,
    *,
    config_path: Path | None = None,
    state: StateStore | None = None,
    telemetry: Telemetry | None = None,
    name: str | None = None,
) -> App:
    """Build the Sanic app for one config; nothing listens until it is served.

    `telemetry` receives each finished request record (`submit(record)`); None
    keeps no request log.
    """
    ctx = AppContext(
        snapshot=build_snapshot(config),
        config_path=config_path,
        bind_host=config.settings.host,
        state=state or open_state_store(config),
        telemetry=telemetry,
        database=telemetry.database if telemetry is not None else None,
    )
    app: App = Sanic(
        name or f"chain429-{next(_app_numbers)}",
        ctx=ctx,
        error_handler=OpenAIErrorHandler(),
        configure_logging=False,
    )
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
    ctx.metrics = Metrics(lambda: gauges(ctx), telemetry, lambda: ctx.budgets_left)
    ctx.connection_guard = ConnectionGuard(ctx.metrics)
    ctx.reloader = Reloader(ctx, config_path)
    ctx.heartbeat = Heartbeat(ctx)
    app.on_request(guard)
    app.on_response(add_cors_headers)
    app.before_server_start(_open_upstream)
    app.after_server_start(_watch_config)
    app.before_server_stop(_drain)
    app.after_server_stop(_close_upstream)
    for routes in (
        health_routes,
        proxy_routes,
        ratelimit_routes,
        stats_routes,
        admin_routes,
        budget_routes,
        client_routes,
        instance_routes,
        steering_routes,
        openapi_routes,
        web_ui_routes,
    ):
        app.blueprint(routes)
    return app


async def _open_upstream(app: App) -> None:
    ctx = app.ctx
    settings = ctx.snapshot.config.settings
    ctx.start(
        Upstream(
            connect_timeout_s=settings.connect_timeout_ms / 1000,
            # As many upstream connections as clients may hold: each open stream
            # holds one of each, and a smaller pool would stall the streams past it.
            max_connections=settings.max_connections,
            allowed_private=lambda: ctx.snapshot.config.settings.allow_private_upstreams,
        )
    )
    if ctx.telemetry is not None:
        ctx.telemetry.start()
    if (shared := shared_store(ctx.state)) is not None:
        # Another instance freed a slot or ended a probe: our queue heads look again.
        shared.set_waker(ctx.router.queues.notify)
        await shared.start()
    ctx.heartbeat.start()
    # Cooldowns and pauses survive a restart: with a database (the request log's)
    # and the memory store, restore the saved state before the first request and
    # keep saving it. A shared store (Redis) keeps its own state.
    ctx.persister = None
    if ctx.database is not None and isinstance(ctx.state, MemoryStateStore):
        ctx.persister = StatePersister(ctx.state, ctx.database)
        await asyncio.to_thread(ctx.persister.load)
        ctx.persister.start()
    # A pause of something the config lost while we were down ends, as on a reload.
    await ctx.reloader.end_stale_pauses()


async def _watch_config(app: App) -> None:
    reloader = app.ctx.reloader
    reloader.start_watching()
    # SIGHUP reloads too, as daemons do; signal handlers need the main thread.
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP"):
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(
            signal.SIGHUP, lambda: loop.create_task(reloader.reload(force=True))
        )


async def _drain(app: App) -> None:
    await app.ctx.reloader.stop_watching()
    # From now on every answer closes its connection, so clients on keep-alive
    # connections move on and the graceful stop is not held open by them.
    app.ctx.draining = True
    app.ctx.router.queues.close()  # queued requests leave with 503 queue_shutdown


async def _close_upstream(app: App) -> None:
    ctx = app.ctx
    await ctx.upstream.aclose()
    await ctx.heartbeat.stop()
    if (shared := shared_store(ctx.state)) is not None:
        await shared.aclose()
    if ctx.persister is not None:
        # Requests are done: save the final state, before telemetry lets go of the database.
        await ctx.persister.stop()
    if ctx.telemetry is not None:
        # In-flight requests are done by now: write every record before exiting.
        await asyncio.to_thread(ctx.telemetry.stop)
