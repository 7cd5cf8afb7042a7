"""The proxy API: `POST /v1/chat/completions` (one request, from its body to its
log record) and `GET /v1/models` (the chains and entry models it accepts).

Every request, answered or not, leaves one `RequestRecord` (with its attempt
trail) that is counted in the metrics and handed to the request log without
waiting. The request id is set in a context variable first, so every log
line about the request carries it, and the client gets it as `X-Request-Id`.
A request sent with a client key is attributed to that client (the record's
`client`, `X-429chain-Client`) and passes its gate (chain429.server.client_gate)
before the router asks any provider.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

from sanic import Blueprint
from sanic.response import HTTPResponse, raw

from chain429.requestlog.records import RequestRecord, new_request_id
from chain429.routing import tokens
from chain429.routing.limits import StateStoreUnavailable
from chain429.routing.router import Reply, Router, StreamStart, Trace
from chain429.server import logs
from chain429.server.auth import Scope, identify, requires
from chain429.server.client_gate import CLIENT_HEADER, Admission, admit, settle
from chain429.server.context import App, AppRequest
from chain429.server.errors import ApiError
from chain429.server.guard import JSON_BODY
from chain429.upstream import provider_json

log = logging.getLogger("chain429.requests")

JSON = "application/json"
# Proxies in front of us (nginx) must not buffer a stream, nor caches keep one.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

# No model writes a million tokens in one answer; anything above is a mistake.
MAX_TOKENS = 1_000_000

_PROMPT_TOKENS = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')


def parse_chat_request(body: bytes) -> dict[str, Any]:
    """The client's JSON, checked enough that no provider is asked with junk."""
    if not body:
        raise ApiError(400, "The request body is empty; send a JSON chat completion request.")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "The request body is nested too deeply.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list.", param="messages")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(
                400, "Each item of 'messages' must be an object with a 'role'.", param="messages"
            )
        if not isinstance(message.get("content"), str | list | None):
            raise ApiError(
                400, "A message's 'content' must be a string or a list of parts.", param="messages"
            )
        if not isinstance(message.get("tool_calls", []), list):
            raise ApiError(400, "A message's 'tool_calls' must be a list.", param="messages")
    options = data.get("stream_options")
    if options is not None and not (
        isinstance(options, dict) and isinstance(options.get("include_usage", False), bool)
    ):
        raise ApiError(
            400,
            "'stream_options' must be an object whose 'include_usage' is true or false.",
            param="stream_options",
        )
    if "stream" in data and not isinstance(data["stream"], bool | None):
        raise ApiError(400, "'stream' must be true or false.", param="stream")
    if "model" in data and not isinstance(data["model"], str):
        raise ApiError(400, "'model' must be a string.", param="model")
    tools = data.get("tools")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(tool, dict) for tool in tools)
    ):
        raise ApiError(400, "'tools' must be a list of objects.", param="tools")
    for name in ("max_tokens", "max_completion_tokens"):
        value = data.get(name)
        # They size the token reservation of every quota the request draws on:
        # a negative one would hand quota back, a huge one block a window.
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if value is not None and (
            not whole or isinstance(value, bool) or not 1 <= value <= MAX_TOKENS
        ):
            raise ApiError(
                400, f"'{name}' must be a whole number from 1 to {MAX_TOKENS}.", param=name
            )
    return data


# Plain decimal seconds: no sign, exponent, `inf` or `nan` (float() takes them all).
MAX_WAIT_PATTERN = r"^[0-9]+(\.[0-9]+)?$"
_MAX_WAIT = re.compile(MAX_WAIT_PATTERN)


def _max_wait(request: AppRequest) -> float | None:
    """The client's own limit on queueing, in seconds (`X-429chain-Max-Wait`).

    Any such limit is taken; the server's `queueMaxWaitMs` caps it.
    """
    value = request.headers.get("x-429chain-max-wait")
    if value is None:
        return None
    if not _MAX_WAIT.match(value.strip()):
        raise ApiError(
            400,
            "X-429chain-Max-Wait must be a number of seconds, such as 30 or 2.5.",
            param="X-429chain-Max-Wait",
        )
    return float(value)


def _count_tokens(record: RequestRecord, request: dict[str, Any], body: bytes) -> None:
    """Tokens from the provider's usage; an estimate (chain429.routing.tokens) without it."""
    # A regex, not a parse: the success body is relayed as it came, never decoded.
    prompt, completion = _PROMPT_TOKENS.search(body), _COMPLETION_TOKENS.search(body)
    if prompt and completion:
        record.prompt_tokens, record.completion_tokens = int(prompt[1]), int(completion[1])
    else:
        try:
            choices = provider_json.parse(body).get("choices") or []
            text = "".join(str((c.get("message") or {}).get("content") or "") for c in choices)
        except AttributeError:  # not an object (None when not JSON), or odd choices
            text = ""
        record.prompt_tokens = tokens.prompt_tokens(request.get("messages") or ())
        record.completion_tokens = tokens.text_tokens(len(text))
        record.tokens_estimated = True
    record.total_tokens = record.prompt_tokens + record.completion_tokens


proxy_routes = Blueprint("proxy")


@proxy_routes.get("/v1/models")
@requires(Scope.PROXY)
async def models(request: AppRequest) -> HTTPResponse:
    client = request.ctx.client
    if client is None:
        return raw(request.app.ctx.snapshot.models_body, 200, None, JSON)
    body = (
        request.app.ctx.snapshot.models_body if client.models_body is None else client.models_body
    )
    return raw(body, 200, {CLIENT_HEADER: client.name}, JSON)


@proxy_routes.post("/v1/chat/completions", ctx_body=JSON_BODY)
async def chat_completions(request: AppRequest) -> HTTPResponse | None:
    # The key is checked inside (not by `requires`) so a refused key is a logged request too.
    return await handle_chat(request.app, request)


async def handle_chat(app: App, request: AppRequest) -> HTTPResponse | None:
    if app.ctx.draining:
        request.stream.keep_alive = False  # type: ignore[union-attr]  # shutting down
    record = RequestRecord(new_request_id(), time.time())
    trace = Trace(record.trail)
    admission = Admission()
    token = logs.request_id.set(record.id)
    started = time.perf_counter()
    try:
        return await _handle(app, request, record, trace, admission, started)
    except ApiError as err:
        record.status = err.status
        record.outcome = err.code or "bad_request"
        err.headers["X-Request-Id"] = record.id
        if record.client is not None:
            err.headers[CLIENT_HEADER] = record.client
        raise
    except StateStoreUnavailable:
        # stateStoreFailure: closed, and Redis is unreachable: the error handler's 503.
        record.status, record.outcome = 503, "state_store_unavailable"
        raise
    except asyncio.CancelledError:
        record.status, record.outcome = 499, "client_disconnected"
        log.info("client disconnected")
        raise
    except Exception:
        # The error handler answers 500 (and logs the traceback); a stream
        # already under way keeps the 200 its client saw.
        record.status, record.outcome = record.status or 500, "internal_error"
        raise
    finally:
        for reservation in trace.open:
            # The answer is over: free the entry's slot, count what it really cost.
            await app.ctx.state.finish(reservation, record.total_tokens)
        if trace.open:
            app.ctx.router.queues.notify()  # a freed slot may let a queued request through
        await settle(app.ctx.state, admission, record)
        record.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        record.attempts = trace.calls
        record.queued_ms = round(trace.queued_ms, 3)
        app.ctx.metrics.observe(record)
        telemetry = app.ctx.telemetry
        if telemetry is not None:
            telemetry.submit(record)
        logs.request_id.reset(token)


async def _handle(
    app: App,
    request: AppRequest,
    record: RequestRecord,
    trace: Trace,
    admission: Admission,
    started: float,
) -> HTTPResponse | None:
    snapshot = app.ctx.snapshot  # this request keeps it, whatever reloads
    caller = identify(request, snapshot, Scope.PROXY)
    record.key_label = caller.label
    client = caller.client
    if client is not None:
        record.client = client.name
    body = parse_chat_request(request.body)
    model = body.get("model")
    record.requested_model = model if isinstance(model, str) else None
    record.stream = body.get("stream") is True
    picked = Router.pick_chain(snapshot, model)
    if picked is None:
        raise ApiError(
            404,
            f"The model '{model}' is neither a chain nor an entry model of this proxy; "
            f"chains: {', '.join(snapshot.chains) or 'none'}.",
            code="model_not_found",
            param="model",
        )
    chain, record.route = picked
    record.chain = chain.name
    if client is not None:
        need = tokens.reservation(body)
        await admit(app.ctx.state, snapshot, client, chain, record.route, model, need, admission)
    router = app.ctx.router
    max_wait_s = _max_wait(request)
    if record.stream:
        started_stream = await router.stream(snapshot, chain, body, trace, max_wait_s)
        if isinstance(started_stream, Reply):
            return _reply(record, started_stream)
        await _relay(request, record, started_stream, started)
        return None
    reply = await router.complete(snapshot, chain, body, trace, max_wait_s)
    if reply.outcome == "success":
        _count_tokens(record, body, reply.body)
    return _reply(record, reply)


def _identity(record: RequestRecord) -> dict[str, str]:
    """The request's id, the chain that served it and why (`X-429chain-Route`), and the
    client that sent it (`X-429chain-Client`)."""
    identity = {
        "X-Request-Id": record.id,
        "X-429chain-Chain": record.chain or "",
        "X-429chain-Route": record.route or "",
    }
    if record.client is not None:
        identity[CLIENT_HEADER] = record.client
    return identity


def _reply(record: RequestRecord, reply: Reply) -> HTTPResponse:
    record.status, record.outcome = reply.status, reply.outcome
    if reply.entry is not None:
        record.provider, record.model = reply.entry.provider_id, reply.entry.model
    if reply.status == 503:
        log.warning("%s: %s", reply.outcome, reply.headers.get("X-429chain-Trace"))
    return raw(reply.body, reply.status, {**reply.headers, **_identity(record)}, JSON)


async def _relay(
    request: AppRequest, record: RequestRecord, stream: StreamStart, started: float
) -> None:
    record.provider, record.model = stream.entry.provider_id, stream.entry.model
    record.status, record.outcome = 200, "success"
    response = await request.respond(
        status=200,
        headers={**stream.headers, **SSE_HEADERS, **_identity(record)},
        content_type="text/event-stream; charset=utf-8",
    )
    record.ttft_ms = round((time.perf_counter() - started) * 1000, 3)
    stats = await stream.session.relay(stream.committed, response.send)
    await response.eof()
    if stats.end != "done":
        record.outcome = stats.end
        log.warning("stream from %s ended early: %s", stream.entry.label, stats.end)
    elif stats.continued_on:
        log.info(
            "stream from %s died mid-answer; finished by %s (%s)",
            stream.entry.label,
            ", ".join(stats.continued_on),
            stats.path,
        )
    record.prompt_tokens, record.completion_tokens = stats.prompt_tokens, stats.completion_tokens
    if stats.prompt_tokens is not None and stats.completion_tokens is not None:
        record.total_tokens = stats.prompt_tokens + stats.completion_tokens
    record.tokens_estimated = stats.tokens_estimated
