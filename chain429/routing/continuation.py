"""Finishing an answer whose stream died mid-way on a later entry (`midStream: continue`).

The client already holds part of an answer; a later entry of the chain must
give exactly the rest, or the stream ends with the `stream_interrupted` error
event as it would without this setting. Two ways, tried in this order:

1. **prefill** (`continued:prefill`): an entry with `supportsPrefill` is sent
   the conversation plus the partial answer as a final assistant message and
   continues it. Every such later entry is tried first, in chain order: a
   continuation always fits what the client has.
2. **restart** (`continued:restart`): an entry without prefill support (or one
   whose provider rejected the prefill with a 400 after all) is asked the
   original request afresh. Its answer is read, unseen, until it covers what
   the client has; if it begins with that (whitespace normalized: any run of
   spaces or newlines equals any other), only the rest is streamed. A
   deterministic model (temperature 0, or a cached answer) often repeats itself
   word for word; when this one does not (`restart_mismatch`), no other entry
   is asked: a different model is even less likely to, and each try costs a
   whole answer.

Either way the attempt trail records it: each call as a row, the entry that
took over with its path, and an `interrupted` row when nothing could finish
the answer. A prefill rejection is a row of the trail, never the client's
error: the client only ever sees the one `stream_interrupted` event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from chain429.requestlog.records import INTERRUPTED, AttemptRecord
from chain429.routing.attempts import ask_entry
from chain429.routing.limits import Block
from chain429.routing.outcome import Outcome
from chain429.routing.runtime import EntryRuntime
from chain429.upstream import provider_json
from chain429.upstream.client import UpstreamError
from chain429.upstream.sse import EventTooLarge, SSEParser, data_event

if TYPE_CHECKING:
    from chain429.routing.streaming import Committed, StreamSession

__all__ = [
    "CONTINUED",
    "MISMATCH",
    "NEED_MORE",
    "PREFILL",
    "RESTART",
    "RESTART_MISMATCH",
    "Trail",
    "overlap_end",
    "take_over",
]

log = logging.getLogger("chain429.stream")

# Trail tokens of the paths (also in StreamStats.path, without the prefix).
CONTINUED = "continued:"
PREFILL = CONTINUED + "prefill"
RESTART = CONTINUED + "restart"
RESTART_MISMATCH = "restart_mismatch"

# What `overlap_end` says when the fresh text does not (yet) cover the received one.
MISMATCH = -1
NEED_MORE = -2


class Trail(Protocol):
    """Where the continuation's calls are recorded (the router's `Trace`)."""

    trail: list[AttemptRecord]

    def skip(self, entry: EntryRuntime, block: Block) -> None: ...

    def called(
        self, entry: EntryRuntime, outcome: Outcome, latency_ms: float, applied: Block | None
    ) -> None: ...


def overlap_end(received: str, fresh: str) -> int:
    """Where, in `fresh`, the text the client already `received` ends.

    Whitespace is normalized: leading whitespace is ignored and any run of
    whitespace matches any other run. Returns the index in `fresh` just after
    the overlap (past any whitespace `received` ended with), `MISMATCH` when
    `fresh` says something else, `NEED_MORE` when `fresh` is a true prefix so far.
    """
    i = j = 0
    while i < len(received) and received[i].isspace():
        i += 1
    while j < len(fresh) and fresh[j].isspace():
        j += 1
    while i < len(received):
        if received[i].isspace():
            if j >= len(fresh):
                return NEED_MORE
            if not fresh[j].isspace():
                return MISMATCH
            while i < len(received) and received[i].isspace():
                i += 1
            while j < len(fresh) and fresh[j].isspace():
                j += 1
            continue
        if j >= len(fresh):
            return NEED_MORE
        if fresh[j] != received[i]:
            return MISMATCH
        i += 1
        j += 1
    return j


async def take_over(session: StreamSession, failed: Committed) -> tuple[Committed, str] | None:
    """A later entry's stream that finishes the answer, with its path (`PREFILL` or
    `RESTART`), its first bytes to send held; None when no entry can."""
    reader = failed.reader
    if reader.saw_tool_calls or not reader.kept_all_text:
        return None  # a half-built tool call, or more text than we kept: nothing to match
    partial = "".join(reader.text)
    entries = session.chain.entries
    start = entries.index(failed.entry) + 1 if failed.entry in entries else len(entries)
    later = entries[start:]
    restartable = [entry for entry in later if not entry.supports_prefill]
    prefill = {
        **session.request,
        "messages": [*session.request["messages"], {"role": "assistant", "content": partial}],
    }
    for entry in later:
        if not entry.supports_prefill:
            continue
        opened = await _open(session, entry, prefill)
        if opened is None:
            continue
        if isinstance(opened, str):  # the prefill was refused: maybe a fresh answer fits
            restartable = [e for e in later if e in restartable or e is entry]
            continue
        # Keep what the first stream said: a later continuation prefills all of it.
        opened.reader.text[:0] = reader.text
        opened.reader.chars += reader.chars
        opened.held = opened.held[-1:]  # its role chunk would restart the answer
        _mark(session, PREFILL, entry)
        return opened, PREFILL
    for entry in restartable:
        opened = await _open(session, entry, session.request)
        if opened is None or isinstance(opened, str):
            continue
        caught_up = await _catch_up(session, opened, partial)
        if caught_up is None:
            return None
        _mark(session, RESTART, entry)
        return caught_up, RESTART
    return None


_REFUSED = "refused"  # what `_open` gives for a 400/422 (a prefill the provider will not take)


async def _open(
    session: StreamSession, entry: EntryRuntime, request: dict[str, Any]
) -> Committed | str | None:
    """Ask one entry (its quota reserved and its answer recorded as for any call)."""
    from chain429.routing.streaming import Committed, Rejected

    asked = await ask_entry(
        session.state,
        entry,
        lambda entry: session.open_entry(entry, request),
        need_tokens=0,
        policy=session.snapshot.policy,
        spend=session.spend,
    )
    trace = session.trace
    if isinstance(asked, Block):
        if trace is not None:
            trace.skip(entry, asked)
        return None
    if trace is not None:
        trace.called(entry, asked.tried.outcome, asked.latency_ms, asked.applied)
    result = asked.tried.result
    if isinstance(result, Rejected):
        log.info("%s refused the continuation (%s)", entry.label, result.status)
        return _REFUSED
    if not isinstance(result, Committed):
        return None
    session.continuations.append(asked.reservation)  # freed when the relay ends
    return result


def _mark(session: StreamSession, token: str, took_over: EntryRuntime | None = None) -> None:
    """The last call of the trail took the answer over (or failed to): say how."""
    if session.trace is not None and session.trace.trail:
        session.trace.trail[-1].outcome = token
    if took_over is not None:
        session.stats.continued_on.append(took_over.label)
        session.stats.path = token.removeprefix("continued:")


def note_interrupted(session: StreamSession, entry: EntryRuntime, reason: str) -> None:
    """The stream ended with an error event: a row of the trail, not a call."""
    session.stats.path = INTERRUPTED
    trace = session.trace
    if trace is not None:
        trace.trail.append(
            AttemptRecord(
                len(trace.trail) + 1, entry.provider_id, entry.model, INTERRUPTED, reason=reason
            )
        )


async def _catch_up(session: StreamSession, fresh: Committed, partial: str) -> Committed | None:
    """Read a fresh answer, unseen, until it covers `partial`; then hold only the rest.

    None (the stream closed) when it says something else, ends first, fails or
    goes quiet for `streamIdleTimeoutMs`.
    """
    from chain429.routing.streaming import Committed

    reader, stream = fresh.reader, fresh.upstream
    # The first content event was held, already encoded: read it back.
    events = [*SSEParser().feed(fresh.held[-1]), *fresh.pending]
    first = True
    loop = asyncio.get_running_loop()
    ends_at = session.ends_at if session.ends_at is not None else loop.time() + 3600.0
    failure = ""
    try:
        while True:
            for index, event in enumerate(events):
                out: bytes | None
                if first:
                    first = False  # already inspected: its text is in the reader
                    kind, out = "content", fresh.held[-1]
                else:
                    kind, out = reader.inspect(event)  # a malformed event is dropped
                if kind in ("error", "done"):
                    failure = f"its fresh answer ended ({kind}) before it covered the partial one"
                    break
                if kind != "content" or out is None:
                    continue
                end = overlap_end(partial, "".join(reader.text))
                if end == MISMATCH:
                    failure = "its fresh answer did not begin with what the client had"
                    break
                if end == NEED_MORE:
                    if reader.saw_finish:
                        failure = "its fresh answer was shorter than what the client had"
                        break
                    continue
                rest = "".join(reader.text)[end:]
                held = _rest_of(out, rest)
                return Committed(fresh.entry, stream, reader, held, events[index + 1 :])
            if failure:
                break
            wake = min(loop.time() + session.idle_s, ends_at)
            async with asyncio.timeout_at(wake):
                raw = await stream.next_chunk()
            events = reader.parser.feed(raw) if raw else reader.parser.close()
            if not raw and not events:
                failure = "its fresh answer ended before it covered the partial one"
                break
    except TimeoutError:
        failure = "its fresh answer stalled before it covered the partial one"
    except (UpstreamError, EventTooLarge) as exc:
        failure = f"its fresh answer failed ({exc})"
    log.info("%s could not finish the answer: %s", fresh.entry.label, failure)
    _mark(session, RESTART_MISMATCH)
    await stream.aclose()
    return None


def _rest_of(out: bytes, rest: str) -> list[bytes]:
    """The chunk to send where the fresh answer passes what the client had: the same
    chunk with only the new text (nothing, if it has neither new text nor a finish)."""
    parsed = SSEParser().feed(out)
    data = provider_json.parse(parsed[0].data or "") if parsed else None
    if not isinstance(data, dict):
        return []
    finished = False
    for choice in data.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        finished = finished or bool(choice.get("finish_reason"))
        delta = choice.get("delta")
        if isinstance(delta, dict):
            delta.pop("role", None)
            for key in ("reasoning_content", "reasoning"):
                delta.pop(key, None)
            delta["content"] = rest
    if not rest and not finished:
        return []
    encoded = provider_json.encode(data)
    return [data_event(encoded)] if encoded is not None else []
