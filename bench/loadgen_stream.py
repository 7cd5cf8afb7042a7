"""The load generator's streaming connection: SSE over chunked transfer-encoding.

Used by `loadgen.py --stream`. Same closed loop as the plain `Conn` (send, read
the whole answer, send again, all from `data_received`), but the answer is a
`Transfer-Encoding: chunked` body, de-framed here incrementally: chunk-size
line, chunk data + CRLF, ..., `0` line, trailers, empty line. The connection
stays keep-alive; the next request goes out only after the terminator, and a
byte after it is an error (we never pipeline).

Per stream two times, both from just before the request is written:
- TTFB: until the first complete chunk whose data contains `data:` arrives,
  i.e. the first SSE event (the role chunk) is in hand, which is when a client
  could first yield something. Bytes before it (headers, SSE comments) don't count.
- total: until the `0\\r\\n\\r\\n` terminator has arrived.

Every 2xx stream is checked cheaply: exactly EVENTS `data:` events, the last
one `data: [DONE]`. The first DEEP_CHECKS streams of the measured window are
also parsed event by event (JSON, a role chunk, 8 non-empty content deltas, a
finish_reason). A stream failing either check is an error, not a success.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from loadgen import Run

STREAM_BODY = (
    b'{"model": "bench", "stream": true, "messages": [{"role": "user", "content": "hello"}]}'
)
CONTENT_CHUNKS = 8  # what bench/fake_main.py streams
EVENTS = CONTENT_CHUNKS + 3  # + role chunk, finish chunk, [DONE]
DEEP_CHECKS = 20
_DONE = b"data: [DONE]"

# parser states
_HEAD, _SIZE, _DATA, _TRAILER, _LENGTH = range(5)


def framing(head: bytes) -> tuple[bool, int]:
    """(chunked, content-length or -1) from a response head."""
    lower = head.lower()
    chunked = False
    at = lower.find(b"\r\ntransfer-encoding:")
    if at >= 0:
        end = lower.find(b"\r\n", at + 2)
        chunked = b"chunked" in lower[at + 20 : end if end >= 0 else None]
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        return chunked, -1
    end = lower.find(b"\r\n", at + 17)
    return chunked, int(lower[at + 17 : end if end >= 0 else None])


def quick_check(body: bytes | bytearray) -> str | None:
    """None if the de-framed SSE body looks whole, else an error kind. C-speed only."""
    if body.count(b"data:") != EVENTS:
        return "stream_event_count"
    if not body.rstrip().endswith(_DONE):
        return "stream_no_done"
    return None


def deep_check(body: bytes | bytearray) -> str | None:
    """Parse every event: role chunk, CONTENT_CHUNKS content deltas, finish, [DONE]."""
    lines = bytes(body).replace(b"\r\n", b"\n").split(b"\n")
    data = [ln[5:].strip() for ln in lines if ln.startswith(b"data:")]
    if not data or data[-1] != b"[DONE]":
        return "stream_no_done"
    roles = contents = finishes = 0
    for raw in data[:-1]:
        try:
            choice = json.loads(raw)["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            return "stream_bad_event"
        delta = choice.get("delta") or {}
        if delta.get("role") == "assistant":
            roles += 1
        elif delta.get("content"):
            contents += 1
        if choice.get("finish_reason"):
            finishes += 1
    if (roles, contents, finishes) != (1, CONTENT_CHUNKS, 1):
        return "stream_shape"
    return None


class StreamConn(asyncio.Protocol):
    """One keep-alive connection streaming in a closed loop; `done` resolves when it stops."""

    def __init__(self, run: Run, done: asyncio.Future[None]) -> None:
        self.run = run
        self.done = done
        self.buf = bytearray()
        self.pos = 0  # parsed up to here in buf
        self.state = _HEAD
        self.need = 0  # _DATA: end of the chunk's data in buf; _LENGTH: end of the body
        self.status = b""
        self.chunked = False
        self.body = bytearray()  # de-framed chunk data of the current answer
        self.started = 0
        self.first = 0  # TTFB timestamp, 0 until the first `data:` event
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        now = time.perf_counter_ns()
        if now >= self.run.measure_until:
            self.transport.close()
            return
        self.started, self.first = now, 0
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = self.pos
        while True:
            state = self.state
            if state == _SIZE:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                try:
                    size = int(bytes(buf[pos:end]).split(b";", 1)[0], 16)
                except ValueError:
                    self.fail("bad_chunk_size")
                    return
                pos = end + 2
                self.need, self.state = pos + size, (_DATA if size else _TRAILER)
            elif state == _DATA:
                need = self.need
                if len(buf) < need + 2:
                    break
                if buf[need : need + 2] != b"\r\n":
                    self.fail("bad_chunk_end")
                    return
                self.body += buf[pos:need]
                pos = need + 2
                self.state = _SIZE
                if not self.first and self.body.find(b"data:") >= 0:
                    self.first = time.perf_counter_ns()
            elif state == _TRAILER:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                last, pos = end == pos, end + 2  # an empty line ends the trailers
                if last:
                    self.finish(pos)
                    return
            elif state == _HEAD:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    break
                head = bytes(buf[pos:end])
                pos = end + 4
                self.status = head[9:12]  # "HTTP/1.1 200"
                try:
                    self.chunked, length = framing(head)
                except ValueError:
                    self.fail("bad_content_length")
                    return
                if self.chunked:
                    self.state = _SIZE
                elif length >= 0:  # an error answer, most likely: read it, keep the connection
                    self.need, self.state = pos + length, _LENGTH
                else:
                    self.fail("no_framing")
                    return
            else:  # _LENGTH
                if len(buf) < self.need:
                    break
                self.body += buf[pos : self.need]
                self.finish(self.need)
                return
        self.pos = pos

    def finish(self, end: int) -> None:
        """The whole answer is in buf[:end]: record it, reset, send the next request."""
        finished = time.perf_counter_ns()
        run, started = self.run, self.started
        if len(self.buf) > end:  # we never pipeline, so extra bytes are a server bug
            self.fail("extra_bytes")
            return
        kind: str | None
        if self.status[:1] != b"2":
            kind = f"status_{self.status.decode('latin-1')}"
        elif not self.chunked:
            kind = "not_chunked"
        else:
            kind = quick_check(self.body)
            if kind is None and started >= run.measure_from and run.deep_left > 0:
                run.deep_left -= 1
                kind = deep_check(self.body)
        if kind is not None:
            run.error(kind, started)
        elif started >= run.measure_from:
            run.latencies.append(finished - started)
            run.ttfb.append((self.first or finished) - started)
        self.reset()
        self.send()

    def reset(self) -> None:
        self.buf.clear()
        self.body.clear()
        self.pos, self.state, self.need = 0, _HEAD, 0

    def fail(self, kind: str) -> None:
        self.run.error(kind, self.started)
        self.reset()  # counted once here, not again in connection_lost
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state != _HEAD or self.buf:  # died mid-answer
            self.run.error("connection_lost", self.started)
        if not self.done.done():
            self.done.set_result(None)
