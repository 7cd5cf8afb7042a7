"""The Sanic application: HTTP in, waterfall, HTTP out.

`create_app` is the app factory. Handlers stay thin: authenticate, validate
the body, hand the request to the router, send its reply. Every error leaves
in OpenAI's shape so OpenAI SDKs raise their usual exception classes.
"""

from __future__ import annotations

import hmac
import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any

from sanic import Request, Sanic
from sanic.exceptions import RequestCancelled, SanicException
from sanic.handlers import ErrorHandler
from sanic.response import HTTPResponse, raw

from chain429 import __version__
from chain429.config import Config
from chain429.errors import ApiError, error_body
from chain429.limits import MemoryStateStore, StateStore
from chain429.router import Reply, Router
from chain429.runtime import Snapshot, build_snapshot
from chain429.upstream import Upstream

log = logging.getLogger("chain429")

_JSON = "application/json"
# Proxies in front of us (nginx) must not buffer a stream, nor caches keep one.
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_app_numbers = itertools.count(1)


class OpenAIErrorHandler(ErrorHandler):
    """Sanic's own errors (404, 405, 413, bad framing) in OpenAI's error shape too."""

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        if isinstance(exception, RequestCancelled):
            # The client went away; the upstream call was cancelled with it.
            log.debug("client disconnected: %s %s", request.method, request.path)
            return raw(b"", 499, None, _JSON)
        if isinstance(exception, ApiError):
            return raw(exception.body(), exception.status, exception.headers, _JSON)
        if isinstance(exception, SanicException):
            status = exception.status_code
            error = ApiError(status, str(exception) or "request failed", code=_code_for(status))
            return raw(error.body(), status, None, _JSON)
        # Never echo the exception: it might carry a provider key or a URL.
        log.error("internal error on %s %s", request.method, request.path, exc_info=exception)
        return raw(error_body("internal error", "server_error", "internal_error"), 500, None, _JSON)


def _code_for(status: int) -> str | None:
    return {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(status)


# -- authentication ----------------------------------------------------------


def _presented_key(request: Request) -> bytes | None:
    auth = request.headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip().encode()
    key = request.headers.get("x-api-key")
    return key.strip().encode() if key else None


def _matches(presented: bytes, keys: tuple[bytes, ...]) -> bool:
    # Compare against every key, so timing reveals neither which key nor how many matched.
    found = False
    for key in keys:
        found |= hmac.compare_digest(presented, key)
    return found


def authorize(request: Request, snapshot: Snapshot, *, admin: bool) -> None:
    """Raise 401 (no or unknown key) or 403 (proxy key on an admin route)."""
    proxy_keys, admin_keys = snapshot.proxy_keys, snapshot.admin_keys
    # Who holds admin: the admin keys; with none configured, the proxy keys (as in 429chain).
    admin_holders = admin_keys or proxy_keys
    required = admin_holders if admin else proxy_keys
    if not required:
        return  # no keys configured: open, which `serve` allows on loopback only
    presented = _presented_key(request)
    if presented is None:
        raise ApiError(
            401,
            "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key'.",
            code="invalid_api_key",
        )
    if admin:
        if _matches(presented, admin_holders):
            return
        if _matches(presented, proxy_keys):
            raise ApiError(
                403, "This key may not use admin routes.", code="insufficient_permissions"
            )
    elif _matches(presented, proxy_keys) or _matches(presented, admin_keys):
        return
    raise ApiError(401, "Invalid API key.", code="invalid_api_key")


# -- request validation ------------------------------------------------------


def parse_chat_request(body: bytes) -> dict[str, Any]:
    """The client's JSON, checked enough that no provider is asked with junk."""
    if not body:
        raise ApiError(400, "The request body is empty; send a JSON chat completion request.")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list.", param="messages")
    if not all(isinstance(message, dict) for message in messages):
        raise ApiError(400, "Each item of 'messages' must be an object.", param="messages")
    if "stream" in data and not isinstance(data["stream"], bool | None):
        raise ApiError(400, "'stream' must be true or false.", param="stream")
    if "model" in data and not isinstance(data["model"], str):
        raise ApiError(400, "'model' must be a string.", param="model")
    return data


# -- the app -----------------------------------------------------------------


def create_app(
    config: Config,
    *,
    config_path: Path | None = None,
    state: StateStore | None = None,
    name: str | None = None,
) -> Sanic:
    """Build the Sanic app for one config; nothing listens until it is served."""
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
    app.ctx.started_at = time.time()
    app.ctx.state = state or MemoryStateStore()

    @app.before_server_start
    async def open_upstream(app: Sanic) -> None:
        settings = app.ctx.snapshot.config.settings
        app.ctx.upstream = Upstream(connect_timeout_s=settings.connect_timeout_ms / 1000)
        app.ctx.router = Router(app.ctx.upstream, app.ctx.state)

    @app.after_server_stop
    async def close_upstream(app: Sanic) -> None:
        await app.ctx.upstream.aclose()

    @app.get("/health")
    async def health(request: Request) -> HTTPResponse:
        snapshot: Snapshot = app.ctx.snapshot
        body = {
            "status": "ok",
            "version": __version__,
            "uptime_s": round(time.time() - app.ctx.started_at, 3),
            "config_generation": snapshot.generation,
            "config_loaded_at": snapshot.loaded_at,
        }
        return raw(json.dumps(body).encode(), 200, None, _JSON)

    @app.get("/v1/models")
    async def models(request: Request) -> HTTPResponse:
        snapshot: Snapshot = app.ctx.snapshot
        authorize(request, snapshot, admin=False)
        return raw(snapshot.models_body, 200, None, _JSON)

    @app.get("/v1/ratelimits")
    async def ratelimits(request: Request) -> HTTPResponse:
        snapshot: Snapshot = app.ctx.snapshot
        authorize(request, snapshot, admin=False)
        now = time.time()
        blocks = await app.ctx.state.snapshot(now)
        entries = []
        for chain in snapshot.chains.values():
            for entry in chain.entries:
                block = await app.ctx.state.check(entry.provider_id, entry.model, now)
                entries.append(
                    {
                        "chain": chain.name,
                        "provider": entry.provider_id,
                        "model": entry.model,
                        "status": block.reason if block else "available",
                        "until": block.until if block else None,
                    }
                )
        body = {"object": "ratelimits", "entries": entries, "blocks": blocks}
        return raw(json.dumps(body).encode(), 200, None, _JSON)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> HTTPResponse | None:
        snapshot: Snapshot = app.ctx.snapshot  # this request keeps it, whatever reloads
        authorize(request, snapshot, admin=False)
        body = parse_chat_request(request.body)
        chain = Router.pick_chain(snapshot, body.get("model"))
        if chain is None:
            raise ApiError(
                404,
                f"The model '{body.get('model')}' is not a chain of this proxy; "
                f"chains: {', '.join(snapshot.chains) or 'none'}.",
                code="model_not_found",
                param="model",
            )
        router: Router = app.ctx.router
        if body.get("stream") is True:
            started = await router.stream(snapshot, chain, body)
            if isinstance(started, Reply):
                return raw(started.body, started.status, started.headers, _JSON)
            response = await request.respond(
                status=200,
                headers={**started.headers, **_SSE_HEADERS},
                content_type="text/event-stream; charset=utf-8",
            )
            stats = await started.session.relay(started.committed, response.send)
            await response.eof()
            log.debug("stream ended: %s", stats)
            return None
        reply = await router.complete(snapshot, chain, body)
        return raw(reply.body, reply.status, reply.headers, _JSON)

    return app
