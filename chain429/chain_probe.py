"""`POST /v1/test/chain/<name>`: ask every entry of a chain on its own, once.

Each entry gets a tiny request (a few tokens), whatever its cooldown says:
the point is to find out. What the answer teaches (cooldowns, header
readings) goes into the rate-limit state like any other answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from chain429 import provider_json
from chain429.limits import Reservation, StateStore
from chain429.outcome import Kind, Outcome, Tried, classify
from chain429.runtime import ChainRuntime, EntryRuntime, Snapshot
from chain429.streaming import Committed, StreamSession
from chain429.upstream import Upstream, UpstreamError

PROBE: dict[str, Any] = {
    "messages": [{"role": "user", "content": "Reply with the word OK."}],
    "max_tokens": 5,
}


async def _ask(upstream: Upstream, snapshot: Snapshot, entry: EntryRuntime) -> Tried[dict]:
    payload = json.dumps({**PROBE, "model": entry.model}).encode()
    try:
        reply = await upstream.post(
            entry.url,
            entry.headers,
            payload,
            timeout_s=entry.timeout_s,
            max_bytes=snapshot.config.settings.max_upstream_body_bytes,
        )
    except UpstreamError as exc:
        return Tried(classify(None, {}, b"", exc.kind, now=time.time(), policy=snapshot.policy))
    outcome = classify(
        reply.status,
        reply.headers,
        reply.body,
        None,
        now=time.time(),
        policy=snapshot.policy,
        dialect=entry.dialect,
    )
    data: dict[str, Any] = {}
    if outcome.kind is Kind.SUCCESS:
        data = provider_json.parse(reply.body)  # a chat completion: classify parsed it
    return Tried(outcome, data, reply.headers, reply.body[:4096])


async def _ask_streaming(
    upstream: Upstream,
    state: StateStore,
    snapshot: Snapshot,
    chain: ChainRuntime,
    entry: EntryRuntime,
) -> Tried[dict]:
    session = StreamSession(snapshot, chain, {**PROBE, "stream": True}, upstream, state)
    tried = await session.open_entry(entry)
    committed = tried.result
    if not isinstance(committed, Committed):
        return Tried(tried.outcome, None, tried.headers, tried.body)
    sent: list[bytes] = []

    async def collect(data: bytes) -> None:
        sent.append(data)

    stats = await session.relay(committed, collect)
    outcome = tried.outcome
    if stats.end != "done":
        outcome = Outcome(Kind.TRANSIENT, stats.end, reason="the stream broke off")
    usage = {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "estimated": stats.tokens_estimated,
    }
    return Tried(outcome, {"model": entry.model, "usage": usage}, tried.headers)


async def probe_chain(
    snapshot: Snapshot,
    chain: ChainRuntime,
    upstream: Upstream,
    state: StateStore,
    *,
    stream: bool = False,
) -> list[dict[str, Any]]:
    async def one(entry: EntryRuntime) -> dict[str, Any]:
        started = time.perf_counter()
        if stream:
            tried = await _ask_streaming(upstream, state, snapshot, chain, entry)
        else:
            tried = await _ask(upstream, snapshot, entry)
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        now = time.time()
        # Not a reservation: the test ignores cooldowns, but its lessons count.
        learned = Reservation(0, entry, 0, now, done=True)
        block = await state.record(
            learned, tried.outcome, tried.headers, tried.body, now, snapshot.policy
        )
        data = tried.result or {}
        usage = data.get("usage") or {}
        return {
            "provider": entry.provider_id,
            "model": entry.model,
            "result": "ok" if tried.outcome.kind is Kind.SUCCESS else tried.outcome.token,
            "status": tried.outcome.status,
            "latency_ms": latency_ms,
            "model_reported": data.get("model"),
            "tokens": {
                "prompt": usage.get("prompt_tokens"),
                "completion": usage.get("completion_tokens"),
            },
            "reason": tried.outcome.reason or None,
            "cooldown_until": block.until if block else None,
            "quotas": state.bucket_quotas(entry, now),
        }

    return list(await asyncio.gather(*(one(entry) for entry in chain.entries)))
