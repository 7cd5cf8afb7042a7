"""Streaming completions that never lie.

Before the first chunk that carries content, reasoning or a tool call (the
commit point) nothing reaches the client, not even headers, so any failure (an
error status, a body that is not SSE, an error event, a cut, no first token
within `firstTokenTimeoutMs` of sending) can still fall through to the next
entry, or be retried on the same one, unseen. After it, chunks are relayed as
they arrive; a stream that then dies ends with one `data: {"error": ...}` event
and no `[DONE]`, so OpenAI SDKs raise instead of returning half an answer,
unless `midStream: continue` finishes the answer on a later entry
(chain429.routing.continuation; chat only).

Legacy completions (`/v1/completions`) stream through the same session: their
`text_completion` chunks carry `choices[].text` where chat's carry a delta.

What a provider can make us hold or wait for is bounded: before the commit
point the body (`maxUpstreamBodyBytes`) and each event (`maxSseEventBytes`),
after it each event, the answer text kept (`maxUpstreamBodyBytes`
characters) and the stream's duration (`streamMaxDurationMs`). Keep-alives
(comments, events without data) never count as activity for the idle deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from chain429.routing import endpoints, tokens
from chain429.routing.attempts import transport_failure
from chain429.routing.budget import SpendPlan
from chain429.routing.continuation import Trail, note_interrupted, take_over
from chain429.routing.endpoints import Endpoint
from chain429.routing.limits import Reservation, StateStore
from chain429.routing.outcome import (
    TOO_LARGE_ANSWER,
    Kind,
    Outcome,
    Tried,
    classify,
    classify_stream_error,
)
from chain429.routing.runtime import ChainRuntime, EntryRuntime, Snapshot
from chain429.upstream import provider_json
from chain429.upstream.client import Upstream, UpstreamError, UpstreamStream
from chain429.upstream.openai_error import error_body
from chain429.upstream.sse import DONE, DONE_EVENT, Event, EventTooLarge, SSEParser, data_event

log = logging.getLogger("chain429.stream")

Send = Callable[[bytes], Awaitable[Any]]

# How long to wait for the rest of an upstream body after [DONE], so its
# connection can go back to the pool instead of being dropped.
_DRAIN_S = 1.0


# What one upstream SSE event is, for the relay: a keep-alive comment, the
# role-only preamble, content (text, reasoning or tool calls), an error event,
# [DONE], a malformed event (counted, never relayed), or nothing to relay.
ChunkKind = Literal["comment", "preamble", "content", "error", "done", "malformed", "skip"]
# How a relayed stream ended when it did not end well.
StreamFailure = Literal["stream_stalled", "stream_interrupted", "stream_too_long"]
StreamEnd = Literal["done", StreamFailure]


@dataclass
class StreamStats:
    """What a stream did, for the request log."""

    end: StreamEnd = "done"
    malformed_chunks: int = 0
    done_added: bool = False  # the provider finished without [DONE]; we sent it
    continued_on: list[str] = field(default_factory=list)
    # midStream: continue: how the answer was finished after a failure, if it was:
    # "prefill", "restart", or "interrupted" (it ended with an error event).
    path: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_estimated: bool = False
    # The answer is over as the client sees it: [DONE], or the error event that
    # ends it, has been sent. What follows (draining, recording) is our own
    # bookkeeping; a client that closes then (OpenAI's SDK does, at [DONE]) has
    # the whole answer.
    finished: bool = False


class ChunkReader:
    """Reads one upstream SSE body and says what each event is."""

    def __init__(
        self,
        *,
        strip_usage: bool,
        normalize: bool,
        max_event_bytes: int = sys.maxsize,
        keep_chars: int = sys.maxsize,
    ) -> None:
        self.parser = SSEParser(max_event_bytes)
        self.strip_usage = strip_usage  # we asked for usage; the client did not
        self.normalize = normalize
        # The answer's text, for a continuation's prefill; only its first
        # `keep_chars` characters are kept (`chars` counts them all).
        self.text: list[str] = []
        self.chars = 0
        self.keep_chars = keep_chars
        self.saw_finish = False
        self.saw_done = False
        self.saw_tool_calls = False
        self.malformed = 0
        self.usage: dict[str, Any] | None = None
        self.error: object = None

    @property
    def kept_all_text(self) -> bool:
        return self.chars <= self.keep_chars

    def _keep(self, text: str) -> None:
        self.chars += len(text)
        if self.chars <= self.keep_chars:
            self.text.append(text)

    def inspect(self, event: Event) -> tuple[ChunkKind, bytes | None]:
        """(kind, bytes to relay): comment, preamble, content, error, done, malformed or skip.

        A malformed event (not a JSON object, or nested too deeply to parse) is
        counted and never relayed.
        """
        if event.comment is not None:
            return "comment", event.encode()
        data = event.data
        if data is None or self.saw_done:
            return "skip", None  # nothing to relay, or trailing junk after [DONE]
        if data.strip() == DONE:
            self.saw_done = True
            return "done", DONE_EVENT
        chunk = provider_json.parse(data)
        if not isinstance(chunk, dict):
            self.malformed += 1
            return "malformed", None
        if event.event == "error" or "error" in chunk:
            self.error = chunk.get("error", chunk)
            return "error", None
        changed = False
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
            if self.strip_usage:
                if not chunk.get("choices"):
                    return "skip", None  # the usage-only chunk the client never asked for
                del chunk["usage"]
                changed = True
        content = False
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            completed = choice.get("text")  # a legacy completion's chunk
            if isinstance(completed, str) and completed:
                self._keep(completed)
                content = True
            delta = choice.get("delta")
            if isinstance(delta, dict):
                text = delta.get("content")
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if text:
                    self._keep(text)
                    content = True
                if reasoning:
                    content = True
                    if self.normalize and not text and "reasoning_content" in delta:
                        delta["content"] = delta.pop("reasoning_content")
                        self._keep(delta["content"])
                        changed = True
                if delta.get("tool_calls"):
                    self.saw_tool_calls = content = True
            if choice.get("finish_reason"):
                self.saw_finish = content = True
        if changed:
            encoded = provider_json.encode(chunk)
            if encoded is None:
                self.malformed += 1
                return "malformed", None
            out = data_event(encoded)
        else:
            out = event.encode()
        return ("content" if content else "preamble"), out


@dataclass
class Committed:
    """An entry that produced its first token: the stream the client will get."""

    entry: EntryRuntime
    upstream: UpstreamStream
    reader: ChunkReader
    held: list[bytes]  # preamble and the first content chunk, not yet sent
    pending: list[Event]  # events that came in the same read as the first content


@dataclass(frozen=True, slots=True)
class Rejected:
    """An entry that said the request itself is wrong (400, 422): the client gets this."""

    status: int
    body: bytes


def _slow_first_token() -> Outcome:
    return Outcome(
        Kind.TRANSIENT,
        "first_token_timeout",
        reason="no token within firstTokenTimeoutMs of sending the request",
    )


def _client_wants_usage(request: dict[str, Any]) -> bool:
    options = request.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


class StreamSession:
    """One streaming request: opens entries for the waterfall, then relays the winner."""

    def __init__(
        self,
        snapshot: Snapshot,
        chain: ChainRuntime,
        request: dict[str, Any],
        upstream: Upstream,
        state: StateStore,
        trace: Trail | None = None,
        spend: SpendPlan | None = None,
        endpoint: Endpoint = Endpoint.CHAT,
    ) -> None:
        settings = snapshot.config.settings
        self.endpoint = endpoint
        self.trace = trace  # the request's attempt trail: continuations add to it
        self.spend = spend  # the request's paid budgets: a paid continuation is held too
        self.snapshot = snapshot
        self.chain = chain
        self.request = request
        self.upstream = upstream
        self.state = state
        self.first_token_s = settings.first_token_timeout_ms / 1000
        self.idle_s = settings.stream_idle_timeout_ms / 1000
        self.max_duration_s = settings.stream_max_duration_ms / 1000
        self.max_body_bytes = settings.max_upstream_body_bytes
        self.max_event_bytes = settings.max_sse_event_bytes
        self.ends_at: float | None = None  # loop time: the streamMaxDurationMs deadline
        self.normalize = settings.normalize_responses
        # A continuation prefills an assistant message: chat has one to prefill.
        self.continue_mid_stream = settings.mid_stream == "continue" and endpoint is Endpoint.CHAT
        self.client_wants_usage = _client_wants_usage(request)
        self.stats = StreamStats()
        # Entries that took over mid-answer: their slots are freed when the relay ends.
        self.continuations: list[Reservation] = []

    # -- before the commit point ------------------------------------------

    def _payload(self, entry: EntryRuntime, request: dict[str, Any]) -> tuple[bytes, bool]:
        """The upstream body, and whether we added a usage request the client did not make."""
        payload = {**request, "model": entry.model}
        # Presets say what their chat route accepts; a legacy one is asked nothing extra.
        added = (
            entry.asks_stream_usage
            and not self.client_wants_usage
            and self.endpoint is Endpoint.CHAT
        )
        if added:
            payload["stream_options"] = {
                **(request.get("stream_options") or {}),
                "include_usage": True,
            }
        return json.dumps(payload).encode(), added

    async def open_entry(
        self, entry: EntryRuntime, request: dict[str, Any] | None = None
    ) -> Tried[Committed | Rejected]:
        """Ask one entry; succeed only once it has sent a token."""
        policy = self.snapshot.policy
        payload, added_usage = self._payload(entry, request or self.request)
        # One deadline from the moment the request is sent: connecting, the headers
        # and the first token all spend it (a provider that answers its headers at
        # once but thinks for 20 s is as slow as one that sends nothing for 20 s).
        deadline = asyncio.get_running_loop().time() + self.first_token_s
        try:
            async with asyncio.timeout_at(deadline):
                stream = await self.upstream.open_stream(
                    entry.url_for(self.endpoint),
                    entry.stream_headers,
                    payload,
                    timeout_s=min(entry.timeout_s, self.first_token_s),
                    max_bytes=self.max_body_bytes,
                )
        except TimeoutError:
            return Tried(_slow_first_token())
        except UpstreamError as exc:
            return Tried(transport_failure(exc.kind, policy))
        committed: Committed | None = None
        headers = stream.headers
        try:
            async with asyncio.timeout_at(deadline):
                if not 200 <= stream.status < 300:
                    body = await stream.read_body()
                    outcome = classify(
                        stream.status,
                        headers,
                        body,
                        None,
                        now=time.time(),
                        policy=policy,
                        dialect=entry.dialect,
                        endpoint=self.endpoint,
                    )
                    if outcome.kind is Kind.CLIENT_ERROR:
                        return Tried(outcome, Rejected(stream.status, body), headers, body)
                    return Tried(outcome, None, headers, body)
                if "text/event-stream" not in headers.get("content-type", ""):
                    not_sse = Outcome(
                        Kind.TRANSIENT,
                        "not_sse",
                        stream.status,
                        reason="a stream was asked for; the answer was not SSE",
                    )
                    return Tried(not_sse, None, headers)
                reader = ChunkReader(
                    strip_usage=added_usage,
                    normalize=self.normalize,
                    max_event_bytes=self.max_event_bytes,
                    keep_chars=self.max_body_bytes,
                )
                committed = await self._until_first_token(entry, stream, reader)
                if committed is not None:
                    success = Outcome(Kind.SUCCESS, str(stream.status), stream.status)
                    return Tried(success, committed, headers)
                if reader.error is not None:
                    error = provider_json.encode(reader.error) or b""
                    outcome = classify_stream_error(reader.error, now=time.time(), policy=policy)
                    return Tried(outcome, None, headers, error)
                if reader.malformed:
                    malformed = Outcome(
                        Kind.TRANSIENT,
                        "malformed_event",
                        reason="an event that is not a JSON object, before the first token",
                    )
                    return Tried(malformed, None, headers)
                token = "empty_stream" if reader.saw_done else "connection_reset"
                ended = Outcome(Kind.TRANSIENT, token, reason="the stream ended before a token")
                return Tried(ended, None, headers)
        except TimeoutError:
            return Tried(_slow_first_token(), None, headers)
        except UpstreamError as exc:
            return Tried(transport_failure(exc.kind, policy))
        except EventTooLarge:
            return Tried(transport_failure(TOO_LARGE_ANSWER, policy))
        finally:
            if committed is None:
                await stream.aclose()

    @staticmethod
    async def _until_first_token(
        entry: EntryRuntime, stream: UpstreamStream, reader: ChunkReader
    ) -> Committed | None:
        held: list[bytes] = []
        while True:
            raw = await stream.next_chunk()
            events = reader.parser.feed(raw) if raw else reader.parser.close()
            for index, event in enumerate(events):
                kind, out = reader.inspect(event)
                if kind == "preamble" and out is not None:
                    held.append(out)
                elif kind == "content" and out is not None:
                    held.append(out)
                    return Committed(entry, stream, reader, held, events[index + 1 :])
                elif kind in ("error", "done", "malformed"):
                    return None  # malformed: the answer is broken, and we can still fall through
                # Comments before the commit point are keep-alives for nobody: dropped.
            if not raw:
                return None

    # -- after the commit point -------------------------------------------

    async def relay(self, committed: Committed, send: Send) -> StreamStats:
        """Send the held preamble and every later chunk as it arrives."""
        try:
            await self._relay_all(committed, send)
        finally:
            for reservation in self.continuations:
                await self.state.finish(reservation, None)
        return self.stats

    async def _relay_all(self, committed: Committed, send: Send) -> None:
        current: Committed | None = committed
        last = committed
        # One deadline for the whole answer, continuations included.
        self.ends_at = asyncio.get_running_loop().time() + self.max_duration_s
        # The held preamble goes out with the rest of the upstream read it came in.
        held = b"".join(committed.held)
        while current is not None:
            last = current
            failure = await self._pump(current, send, held)
            held = b""
            if failure is None and not self.stats.finished:  # finished for it without [DONE]
                self._count_tokens(current.reader)
                self.stats.finished = True
            await self.state.record_stream_end(
                current.entry,
                clean=failure is None,
                now=time.time(),
                policy=self.snapshot.policy,
            )
            if failure is None:
                break
            code, message = failure
            current = None
            if self.continue_mid_stream and code != "stream_too_long":
                taken = await take_over(self, last)
                if taken is not None:
                    current = taken[0]
                    await send(b"".join(current.held))
            if current is None:
                self.stats.end = code
                note_interrupted(self, last.entry, message)
                self._count_tokens(last.reader)
                await send(data_event(error_body(message, "server_error", code).decode()))
                self.stats.finished = True

    async def _pump(
        self, committed: Committed, send: Send, held: bytes = b""
    ) -> tuple[StreamFailure, str] | None:
        """Relay until the stream ends: None when it ended well, else (code, message).

        `held` (what came before the commit point) is sent with the events of
        the read it arrived in: one write to the client per upstream read.

        The idle deadline moves only when an event carrying data arrives (and
        after it has been sent on, so a slow client does not eat into it):
        comments and empty events are keep-alives, not activity.
        """
        stream, reader, label = committed.upstream, committed.reader, committed.entry.label
        stream.lift_limit()  # relayed, not held: events and the duration bound it now
        events, committed.pending = committed.pending, []
        ended = False
        loop = asyncio.get_running_loop()
        ends_at = self.ends_at if self.ends_at is not None else loop.time() + self.max_duration_s
        idle_at = loop.time() + self.idle_s
        try:
            while True:
                if not events and not ended:
                    if held:  # nothing else in hand: the client must not wait for the next read
                        await send(held)
                        held = b""
                    wake = min(idle_at, ends_at)
                    try:
                        async with asyncio.timeout_at(wake):
                            raw = await stream.next_chunk()
                        ended = not raw
                        events = reader.parser.feed(raw) if raw else reader.parser.close()
                    except TimeoutError:
                        if wake >= ends_at:
                            return (
                                "stream_too_long",
                                f"{label} was still streaming after streamMaxDurationMs.",
                            )
                        return "stream_stalled", f"{label} stopped sending mid-answer (stalled)."
                    except UpstreamError as exc:
                        return "stream_interrupted", f"{label} cut the stream ({exc.kind})."
                    except EventTooLarge as exc:
                        return (
                            "stream_interrupted",
                            f"{label} sent an event over maxSseEventBytes ({exc.limit} bytes).",
                        )
                out: list[bytes] = [held] if held else []
                held = b""
                failure: tuple[StreamFailure, str] | None = None
                done = False
                active = False
                for event in events:
                    active = active or event.data is not None
                    kind, data = reader.inspect(event)
                    if kind == "error":
                        failure = ("stream_interrupted", f"{label} sent an error mid-answer.")
                        break
                    if data is not None:
                        out.append(data)
                    if kind == "done":
                        done = True
                        break
                events = []
                if out:
                    await send(b"".join(out))
                if active:
                    idle_at = loop.time() + self.idle_s
                if done:
                    # [DONE] is out: count before draining, the client may close now.
                    self._count_tokens(reader)
                    self.stats.finished = True
                    await self._drain(stream)
                    return None
                if failure is not None:
                    return failure
                if ended:
                    if not reader.saw_finish:
                        return (
                            "stream_interrupted",
                            f"{label} closed the stream before it finished.",
                        )
                    # Complete but for [DONE]: finish it for the client at once.
                    self.stats.done_added = True
                    await send(DONE_EVENT)
                    return None
        finally:
            self.stats.malformed_chunks += reader.malformed
            await stream.aclose()

    @staticmethod
    async def _drain(stream: UpstreamStream) -> None:
        try:
            async with asyncio.timeout(_DRAIN_S):
                while await stream.next_chunk():
                    pass
        except (TimeoutError, UpstreamError):
            pass

    def _count_tokens(self, reader: ChunkReader) -> None:
        usage = reader.usage
        if usage and isinstance(usage.get("completion_tokens"), int):
            self.stats.prompt_tokens = usage.get("prompt_tokens")
            self.stats.completion_tokens = usage["completion_tokens"]
            return
        # No usage from the provider: estimate, and say so.
        self.stats.prompt_tokens = endpoints.prompt_tokens(self.endpoint, self.request)
        self.stats.completion_tokens = tokens.text_tokens(reader.chars)
        self.stats.tokens_estimated = True
