"""`POST /v1/test/chain/<name>`: ask every entry of a chain on its own, once.

Each entry gets a tiny request (a few tokens), whatever its cooldown says
(an entry of an embeddings chain gets a one-word embedding request, never a
stream):
the point is to find out. What the answer teaches (cooldowns, header
readings) goes into the rate-limit state like any other answer. A paused
entry is not called (its result is `skip:paused`): a person said not to send
there, often to stop spending. `chain429 chain test`, which asks the
providers straight from the CLI, tests it all the same.

`on_event`, when given, hears each entry's streamed text as it arrives
(`{"type": "delta", "index", "text"}`) and each entry's result as soon as that
entry is done (`{"type": "result", "index", ...}`): the admin route relays them
as server-sent events, so a person watching sees every entry answer live.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from chain429.routing.attempts import post_and_classify
from chain429.routing.endpoints import Endpoint
from chain429.routing.limits import Reservation, StateStore, scope_keys
from chain429.routing.outcome import BlockReason, Kind, Outcome, Tried
from chain429.routing.runtime import ChainRuntime, EntryRuntime, Snapshot
from chain429.routing.streaming import Committed, StreamSession
from chain429.upstream import provider_json
from chain429.upstream.client import Upstream

PROBE: dict[str, Any] = {
    "messages": [{"role": "user", "content": "Reply with the word OK."}],
    "max_tokens": 5,
}
EMBEDDING_PROBE: dict[str, Any] = {"input": "OK"}
TEXT_MAX = 2000  # characters of each answer a result carries

OnEvent = Callable[[dict[str, Any]], Awaitable[None]]
OnText = Callable[[str], Awaitable[None]]


def _answer_text(data: dict[str, Any]) -> str | None:
    """The first choice's text of a chat completion, if it has one; for an embedding,
    its size (`1024 dimensions`)."""
    try:
        if "data" in data:
            vector = data["data"][0]["embedding"]
            return f"{len(vector)} dimensions" if isinstance(vector, list) else None
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content[:TEXT_MAX] if isinstance(content, str) else None


async def _ask(
    upstream: Upstream, snapshot: Snapshot, entry: EntryRuntime
) -> Tried[dict[str, Any]]:
    embeds = entry.kind == "embeddings"
    probe = EMBEDDING_PROBE if embeds else PROBE
    payload = json.dumps({**probe, "model": entry.model}).encode()
    tried = await post_and_classify(
        upstream,
        entry,
        payload,
        policy=snapshot.policy,
        max_bytes=snapshot.config.settings.max_upstream_body_bytes,
        endpoint=Endpoint.EMBEDDINGS if embeds else Endpoint.CHAT,
    )
    data: dict[str, Any] = {}
    if tried.outcome.kind is Kind.SUCCESS and tried.result is not None:
        data = provider_json.parse(tried.result.body)  # an answer: classify parsed it
        data["text"] = _answer_text(data)
    return Tried(tried.outcome, data, tried.headers, tried.body[:4096])


async def _ask_streaming(
    upstream: Upstream,
    state: StateStore,
    snapshot: Snapshot,
    chain: ChainRuntime,
    entry: EntryRuntime,
    on_text: OnText | None = None,
) -> Tried[dict[str, Any]]:
    session = StreamSession(snapshot, chain, {**PROBE, "stream": True}, upstream, state)
    tried = await session.open_entry(entry)
    committed = tried.result
    if not isinstance(committed, Committed):
        return Tried(tried.outcome, None, tried.headers, tried.body)
    pieces = committed.reader.text  # the answer's text so far, grown as chunks are read
    told = 0

    async def collect(data: bytes) -> None:
        nonlocal told
        if on_text is not None and len(pieces) > told:
            text, told = "".join(pieces[told:]), len(pieces)
            if text:
                await on_text(text)

    stats = await session.relay(committed, collect)
    outcome = tried.outcome
    if stats.end != "done":
        outcome = Outcome(Kind.TRANSIENT, stats.end, reason="the stream broke off")
    usage = {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "estimated": stats.tokens_estimated,
    }
    text = "".join(pieces)[:TEXT_MAX]
    return Tried(outcome, {"model": entry.model, "usage": usage, "text": text}, tried.headers)


async def probe_chain(
    snapshot: Snapshot,
    chain: ChainRuntime,
    upstream: Upstream,
    state: StateStore,
    *,
    stream: bool = False,
    on_event: OnEvent | None = None,
) -> list[dict[str, Any]]:
    pauses = {pause.key: pause for pause in await state.pauses()}

    async def one(index: int, entry: EntryRuntime) -> dict[str, Any]:
        provider_key, _, entry_key = scope_keys(entry)
        pause = pauses.get(provider_key) or pauses.get(entry_key)
        if pause is not None:
            skipped = _skipped(entry, f"skip:{BlockReason.PAUSED}", pause.describe())
            if on_event is not None:
                await on_event({"type": "result", "index": index, **skipped})
            return skipped
        started = time.perf_counter()
        if stream and entry.kind == "chat":  # an embedding has nothing to stream

            async def on_text(text: str) -> None:
                if on_event is not None:
                    await on_event({"type": "delta", "index": index, "text": text})

            tried = await _ask_streaming(upstream, state, snapshot, chain, entry, on_text)
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
        result = {
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
            "quotas": await state.bucket_quotas(entry, now),
            "text": data.get("text"),
        }
        if on_event is not None:
            await on_event({"type": "result", "index": index, **result})
        return result

    return list(await asyncio.gather(*(one(i, entry) for i, entry in enumerate(chain.entries))))


def _skipped(entry: EntryRuntime, token: str, reason: str) -> dict[str, Any]:
    """The result of an entry the test did not call."""
    return {
        "provider": entry.provider_id,
        "model": entry.model,
        "result": token,
        "status": None,
        "latency_ms": None,
        "model_reported": None,
        "tokens": {"prompt": None, "completion": None},
        "reason": reason,
        "cooldown_until": None,
        "quotas": [],
        "text": None,
    }
