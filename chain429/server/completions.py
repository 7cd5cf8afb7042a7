"""The proxy API: `POST /v1/chat/completions`, `/v1/completions` and
`/v1/embeddings` (one request, from its body to its log record) and
`GET /v1/models` (the chains and entry models it accepts).

The three routes are one flow, parameterised by the endpoint
(chain429.routing.endpoints): the body is checked (chain429.server.proxy_bodies),
the chain picked, and a request naming a chain of the other kind (an
embeddings chain on a chat route, a chat chain on `/v1/embeddings`) is a 404
`wrong_endpoint` before any provider is asked.

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
import logging
import re
import time
from typing import Any

from sanic import Blueprint
from sanic.response import HTTPResponse, raw

from chain429.config.model import ChainKind
from chain429.requestlog.records import RequestRecord, new_request_id
from chain429.routing import endpoints
from chain429.routing.budget import estimate_usd
from chain429.routing.continuation import CONTINUED
from chain429.routing.endpoints import CHAIN_KIND, ROUTE, Endpoint, serving
from chain429.routing.limits import Reservation, StateStoreUnavailable, shared_store
from chain429.routing.router import Reply, Route, Router, StreamStart
from chain429.routing.runtime import ChainRuntime, Snapshot
from chain429.routing.streaming import StreamStats
from chain429.routing.trace import Trace
from chain429.server import logs
from chain429.server.auth import Scope, identify, requires
from chain429.server.client_gate import CLIENT_HEADER, Admission, admit, settle
from chain429.server.context import App, AppRequest
from chain429.server.errors import ApiError
from chain429.server.guard import JSON_BODY
from chain429.server.proxy_bodies import parse_request

log = logging.getLogger("chain429.requests")

JSON = "application/json"
ALIAS_HEADER = "X-429chain-Alias"
# Proxies in front of us (nginx) must not buffer a stream, nor caches keep one.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

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


def _charge(record: RequestRecord, answered: Reservation) -> float | None:
    """What the answer cost, set on the record; the same goes to the paid budget.

    From the tokens counted (the provider's usage, else an estimate: then
    `cost_estimated`) at the price of the entry that answered. When no tokens
    were counted (the client left mid-stream) the estimate the budget held is
    the cost. A stream finished on another entry (`midStream: continue`) is
    charged at its estimate on every entry that answered: what each part cost
    is not known (the request log shows the answering entry's price of the
    tokens counted, marked estimated). None: unpriced, nothing known.
    """
    price, hold = answered.entry.price, answered.spend
    prompt, completion = record.prompt_tokens, record.completion_tokens
    continued = any(a.outcome.startswith(CONTINUED) for a in record.trail)
    if price is not None and prompt is not None and completion is not None:
        record.cost_usd = price.cost(prompt, completion)
        record.cost_estimated = record.tokens_estimated or continued
        return None if continued else record.cost_usd
    if hold is not None:
        record.cost_usd, record.cost_estimated = hold.amount_usd, True
    return None


def _count_tokens(
    record: RequestRecord, endpoint: Endpoint, request: dict[str, Any], body: bytes
) -> None:
    """Tokens from the provider's usage; an estimate (chain429.routing.tokens) without it."""
    prompt, completion, estimated = endpoints.count_tokens(endpoint, request, body)
    record.prompt_tokens, record.completion_tokens = prompt, completion
    record.tokens_estimated = estimated
    record.total_tokens = prompt + completion


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


# The key is checked inside (not by `requires`) so a refused key is a logged request too.
@proxy_routes.post(ROUTE[Endpoint.CHAT], ctx_body=JSON_BODY)
async def chat_completions(request: AppRequest) -> HTTPResponse | None:
    return await handle_proxied(request.app, request, Endpoint.CHAT)


@proxy_routes.post(ROUTE[Endpoint.COMPLETIONS], ctx_body=JSON_BODY)
async def completions(request: AppRequest) -> HTTPResponse | None:
    return await handle_proxied(request.app, request, Endpoint.COMPLETIONS)


@proxy_routes.post(ROUTE[Endpoint.EMBEDDINGS], ctx_body=JSON_BODY)
async def embeddings(request: AppRequest) -> HTTPResponse | None:
    return await handle_proxied(request.app, request, Endpoint.EMBEDDINGS)


async def handle_proxied(app: App, request: AppRequest, endpoint: Endpoint) -> HTTPResponse | None:
    if app.ctx.draining:
        request.stream.keep_alive = False  # type: ignore[union-attr]  # shutting down
    record = RequestRecord(new_request_id(), time.time(), endpoint=endpoint.value)
    trace = Trace(record.trail)
    admission = Admission()
    token = logs.request_id.set(record.id)
    started = time.perf_counter()
    try:
        return await _handle(app, request, endpoint, record, trace, admission, started)
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
        try:
            if shared_store(app.ctx.state) is None:
                # This process's store never waits: no cancellation can land midway.
                await _close_out(app, record, trace, admission, started)
            else:
                # Freeing slots, settling costs and logging the record must all happen
                # even when the client's connection drops while Redis answers (Sanic
                # then cancels this task): a task of their own, which that does not
                # stop. (11 us a request: not paid where nothing can interrupt.)
                closing = asyncio.ensure_future(_close_out(app, record, trace, admission, started))
                _CLOSING.add(closing)
                closing.add_done_callback(_CLOSING.discard)
                await asyncio.shield(closing)
        finally:
            logs.request_id.reset(token)


# Close-outs under way (the loop holds tasks only weakly).
_CLOSING: set[asyncio.Future[None]] = set()


async def _close_out(
    app: App, record: RequestRecord, trace: Trace, admission: Admission, started: float
) -> None:
    """The request is over: free its entries' slots at their real cost, settle its
    client's tokens, and hand the record to metrics and the request log."""
    for reservation in trace.open:
        # The answer is over: free the entry's slot, count what it really cost.
        cost = _charge(record, reservation)
        await app.ctx.state.finish(reservation, record.total_tokens, cost)
    if record.cost_usd is None and trace.cut_off_usd is not None:
        # A call the client cut off, its usage unknown: the estimate its budgets charge.
        record.cost_usd, record.cost_estimated = trace.cut_off_usd, True
    if trace.open:
        app.ctx.router.queues.notify()  # a freed slot may let a queued request through
    await settle(app.ctx.state, admission, record)
    record.latency_ms = round((time.perf_counter() - started) * 1000, 3)
    record.attempts = trace.calls
    record.queued_ms = round(trace.queued_ms, 3)
    if trace.known is not None:
        record.leading_skips = trace.known.steps
    app.ctx.metrics.observe(record, trace.known)
    telemetry = app.ctx.telemetry
    if telemetry is not None:
        telemetry.submit(record)


def _chains_of(snapshot: Snapshot, kind: ChainKind) -> str:
    return ", ".join(name for name, chain in snapshot.chains.items() if chain.kind == kind)


def _takes(snapshot: Snapshot, endpoint: Endpoint) -> str:
    kind = CHAIN_KIND[endpoint]
    return f"{ROUTE[endpoint]} takes {kind} chains: {_chains_of(snapshot, kind) or 'none'}."


def _pick(snapshot: Snapshot, endpoint: Endpoint, model: object) -> tuple[ChainRuntime, Route]:
    """The chain `model` names for this request, or a 404 `model_not_found`."""
    picked = Router.pick_chain(snapshot, model, CHAIN_KIND[endpoint])
    if picked is None:
        raise ApiError(
            404,
            f"The model '{model}' is not a chain, an alias or an entry model of this proxy; "
            + _takes(snapshot, endpoint),
            code="model_not_found",
            param="model",
        )
    return picked


def _check_kind(
    snapshot: Snapshot, endpoint: Endpoint, model: object, chain: ChainRuntime, route: Route
) -> None:
    """A chain of the other kind (an embeddings chain on a chat route, a chat chain on
    /v1/embeddings) is a 404 `wrong_endpoint`, as OpenAI answers a chat route that names
    an embedding model (docs/api.md#endpoints-and-chain-kinds)."""
    if chain.kind != CHAIN_KIND[endpoint]:
        named = "chain" if route == "chain" else "model"  # an entry model names its chains
        routes = " or ".join(ROUTE[e] for e in serving(chain.kind))
        raise ApiError(
            404,
            f"'{model}' is {'an' if chain.kind == 'embeddings' else 'a'} {chain.kind} {named}: "
            f"send it to {routes}. {_takes(snapshot, endpoint)}",
            code="wrong_endpoint",
            param="model",
        )


async def _handle(
    app: App,
    request: AppRequest,
    endpoint: Endpoint,
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
    body = parse_request(endpoint, request.body)
    model = body.get("model")
    record.requested_model = model if isinstance(model, str) else None
    # Embeddings do not stream: a `stream` there is the provider's to refuse.
    record.stream = endpoint is not Endpoint.EMBEDDINGS and body.get("stream") is True
    chain, route = _pick(snapshot, endpoint, model)
    record.chain, record.route = chain.name, route
    _check_kind(snapshot, endpoint, model, chain, route)
    if client is not None:
        need = endpoints.reservation(endpoint, body)
        await admit(app.ctx.state, snapshot, client, chain, route, model, need, admission)
    router = app.ctx.router
    max_wait_s = _max_wait(request)
    if record.stream:
        started_stream = await router.stream(
            snapshot, chain, body, trace, max_wait_s, client=record.client, endpoint=endpoint
        )
        if isinstance(started_stream, Reply):
            return _reply(record, started_stream)
        await _relay(request, record, trace, started_stream, started)
        return None
    reply = await router.complete(
        snapshot, chain, body, trace, max_wait_s, client=record.client, endpoint=endpoint
    )
    if reply.outcome == "success":
        _count_tokens(record, endpoint, body, reply.body)
    return _reply(record, reply)


def _identity(record: RequestRecord) -> dict[str, str]:
    """The request's id, the chain that served it and why (`X-429chain-Route`), the
    alias it was asked for by (`X-429chain-Alias`), and the client that sent it
    (`X-429chain-Client`)."""
    identity = {
        "X-Request-Id": record.id,
        "X-429chain-Chain": record.chain or "",
        "X-429chain-Route": record.route or "",
    }
    if record.route == "alias" and record.requested_model is not None:
        identity[ALIAS_HEADER] = record.requested_model  # a config name: header-safe
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
    request: AppRequest, record: RequestRecord, trace: Trace, stream: StreamStart, started: float
) -> None:
    record.provider, record.model = stream.entry.provider_id, stream.entry.model
    record.status, record.outcome = 200, "success"
    response = await request.respond(
        status=200,
        headers={**stream.headers, **SSE_HEADERS, **_identity(record)},
        content_type="text/event-stream; charset=utf-8",
    )
    record.ttft_ms = round((time.perf_counter() - started) * 1000, 3)
    stats = stream.session.stats
    try:
        await stream.session.relay(stream.committed, response.send)
        await response.eof()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not stats.finished or task is None:
            _count_stream_tokens(record, stats)  # what is known of an answer cut short
            if record.prompt_tokens is None or record.completion_tokens is None:
                session = stream.session  # no usage yet: the call may cost its estimate
                trace.cut_off_usd = estimate_usd(stream.entry, session.endpoint, session.request)
            raise
        # The client closed once it had the whole answer (OpenAI's SDK does at [DONE]),
        # while we drained and recorded: an answer, not a disconnect.
        task.uncancel()
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
    _count_stream_tokens(record, stats)


def _count_stream_tokens(record: RequestRecord, stats: StreamStats) -> None:
    record.prompt_tokens, record.completion_tokens = stats.prompt_tokens, stats.completion_tokens
    if stats.prompt_tokens is not None and stats.completion_tokens is not None:
        record.total_tokens = stats.prompt_tokens + stats.completion_tokens
    record.tokens_estimated = stats.tokens_estimated
