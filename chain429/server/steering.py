"""Steering the running server, for the CLI and the web UI alike.

Test a chain's entries or a provider's models (`POST /v1/test/...`: as JSON
at the end, or live as server-sent events with `Accept: text/event-stream`),
end an entry's or a provider's cooldowns (`POST /v1/admin/limits/clear`), and
pause or resume one (`POST /v1/admin/entries/pause|resume`, routing/pauses.py).
All of it is the write scope: a test spends quota, clearing a cooldown sends
traffic to a provider that asked for a pause, and a pause or a resume decides
where traffic goes.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from sanic import Blueprint
from sanic.response import HTTPResponse, raw

from chain429.routing.limits import StateStoreUnavailable
from chain429.routing.pauses import pause_key
from chain429.routing.probe import probe_chain
from chain429.routing.runtime import ChainRuntime, EntryRuntime, Snapshot
from chain429.server.admin import answer, json_body
from chain429.server.auth import Scope, requires
from chain429.server.context import AppRequest
from chain429.server.errors import ApiError
from chain429.server.guard import JSON_BODY
from chain429.server.ratelimit_report import pause_view

__all__ = ["steering_routes"]

steering_routes = Blueprint("steering")


@steering_routes.post("/v1/test/chain/<name>")
@requires(Scope.WRITE)
async def test_chain(request: AppRequest, name: str) -> HTTPResponse | None:
    snapshot = request.app.ctx.snapshot
    chain = snapshot.chains.get(name)
    if chain is None:
        raise ApiError(
            404,
            f"No chain named '{name}'; chains: {', '.join(snapshot.chains)}.",
            code="not_found",
            param="name",
        )
    return await _probe(request, snapshot, chain, {"chain": name})


@steering_routes.post("/v1/test/provider/<provider_id>")
@requires(Scope.WRITE)
async def test_provider(request: AppRequest, provider_id: str) -> HTTPResponse | None:
    """Each model the provider serves in a chain, once (as `chain429 provider test`)."""
    snapshot = request.app.ctx.snapshot
    _known_provider(snapshot, provider_id)
    entries: dict[str, EntryRuntime] = {}
    for chain in snapshot.chains.values():
        for entry in chain.entries:
            if entry.provider_id == provider_id:
                entries.setdefault(entry.model, entry)
    tested = ChainRuntime(f"provider:{provider_id}", tuple(entries.values()))
    return await _probe(request, snapshot, tested, {"provider": provider_id})


async def _probe(
    request: AppRequest, snapshot: Snapshot, chain: ChainRuntime, about: dict[str, Any]
) -> HTTPResponse | None:
    """Run a test; as JSON at the end, or (`Accept: text/event-stream`) as events live."""
    flag = request.args.get("stream", "false").lower()
    if flag not in ("true", "false"):
        raise ApiError(400, "'stream' must be true or false.", param="stream")
    stream = flag == "true"
    state, upstream = request.app.ctx.state, request.app.ctx.upstream

    def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
        ok = sum(1 for r in results if r["result"] == "ok")
        return {**about, "stream": stream, "working": ok, "entries": results}

    if "text/event-stream" not in request.headers.get("accept", ""):
        results = await probe_chain(snapshot, chain, upstream, state, stream=stream)
        return answer(summary(results), snapshot.generation)
    response = await request.respond(
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        content_type="text/event-stream",
    )
    sending = asyncio.Lock()  # entries run at once; one event at a time on the wire

    async def send(event: dict[str, Any]) -> None:
        async with sending:
            await response.send(b"data: " + json.dumps(event).encode() + b"\n\n")

    listed = [
        {"index": i, "provider": e.provider_id, "model": e.model}
        for i, e in enumerate(chain.entries)
    ]
    await send({"type": "start", **about, "stream": stream, "entries": listed})
    results = await probe_chain(snapshot, chain, upstream, state, stream=stream, on_event=send)
    await send({"type": "done", **summary(results)})
    await response.eof()
    return None


def _known_provider(snapshot: Snapshot, provider_id: str) -> None:
    if provider_id not in {p.id for p in snapshot.config.providers}:
        known = ", ".join(p.id for p in snapshot.config.providers) or "none"
        raise ApiError(
            404,
            f"No provider with id '{provider_id}'; providers: {known}.",
            code="not_found",
            param="provider",
        )


def _named_entry(request: AppRequest) -> tuple[str, str | None, list[EntryRuntime]]:
    """The provider (and entry) a steering body names: `{"provider"}` or `{"provider",
    "model"}`, with the runtime entries of that (provider, model); 400 or 404 otherwise."""
    body = json_body(request)
    unknown = sorted(set(body) - {"provider", "model"})
    if unknown:
        raise ApiError(400, f"Unknown field '{unknown[0]}'.", param=unknown[0])
    provider, model = body.get("provider"), body.get("model")
    if not isinstance(provider, str) or not provider:
        raise ApiError(400, "'provider' must be a non-empty string.", param="provider")
    if "model" in body and (not isinstance(model, str) or not model):
        raise ApiError(400, "'model' must be a non-empty string.", param="model")
    snapshot = request.app.ctx.snapshot
    _known_provider(snapshot, provider)
    if not isinstance(model, str):
        return provider, None, []
    chains = (*snapshot.chains.values(), *snapshot.model_chains.values())
    entries = [
        e for c in chains for e in c.entries if (e.provider_id, e.model) == (provider, model)
    ]
    if not entries:
        raise ApiError(404, f"No chain entry {provider}/{model}.", code="not_found", param="model")
    return provider, model, entries


def _json(body: Any) -> HTTPResponse:
    return raw(json.dumps(body).encode(), 200, None, "application/json")


@steering_routes.post("/v1/admin/limits/clear", ctx_body=JSON_BODY)
@requires(Scope.WRITE)
async def clear_limits(request: AppRequest) -> HTTPResponse:
    """End an entry's cooldowns (`{"provider", "model"}`) or a provider's (`{"provider"}`)."""
    provider, _, entries = _named_entry(request)
    cleared = await request.app.ctx.state.clear(provider, entries, time.time())
    return _json({"cleared": cleared})


def _shared_store_down(err: StateStoreUnavailable) -> ApiError:
    return ApiError(503, f"Not changed: {err}.", code="state_store_unavailable")


@steering_routes.post("/v1/admin/entries/pause", ctx_body=JSON_BODY)
@requires(Scope.WRITE)
async def pause_entry(request: AppRequest) -> HTTPResponse:
    """Skip a provider (`{"provider"}`) or one entry (`{"provider", "model"}`) until resumed."""
    provider, model, _ = _named_entry(request)
    try:
        pause, new = await request.app.ctx.state.pause(
            pause_key(provider, model), request.ctx.caller, time.time()
        )
    except StateStoreUnavailable as err:
        raise _shared_store_down(err) from None
    return _json({"paused": pause_view(pause), "new": new})


@steering_routes.post("/v1/admin/entries/resume", ctx_body=JSON_BODY)
@requires(Scope.WRITE)
async def resume_entry(request: AppRequest) -> HTTPResponse:
    """End the pause of an entry, or of a provider and every one of its entries."""
    provider, model, _ = _named_entry(request)
    ctx = request.app.ctx
    try:
        resumed = await ctx.state.resume(provider, model)
        still = model is not None and any(
            p.key == pause_key(provider) for p in await ctx.state.pauses()
        )
    except StateStoreUnavailable as err:
        raise _shared_store_down(err) from None
    if resumed and ctx.serving:
        ctx.router.queues.notify()  # queued requests look again: an entry is back
    return _json({"resumed": resumed, "provider_paused": still})
