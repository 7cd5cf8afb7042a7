"""A scripted fake OpenAI-compatible provider: a real local HTTP/1.1 server.

Used by the tests (429s with headers, 5xx, slow answers, cut and stalled
streams), by ``chain429 demo`` and by the load benchmark. It ships in the
package, so it needs only the stdlib and httptools. It is a raw
``asyncio.Protocol`` rather than a framework because the benchmark must
measure the proxy, not the fake: the default answer is a few byte
concatenations per request.

The scripted answers themselves (``Reply``, ``ReceivedRequest``) and their wire
framing live in ``chain429.fakes.replies``; they are re-exported here.

    with FakeProvider("groq") as fake:
        fake.script(Reply.rate_limited("30"), Reply(delay=0.5))
        ...  # point a client at fake.base_url

It serves `/chat/completions`, the legacy `/completions` and `/embeddings`
(deterministic vectors); a script is played in order across all three, and a
reply whose body is left out gets the answer of the route it was asked on.
Unscripted, it answers a streaming request with a stream and any other with a
completion (or an embedding list). Run standalone: ``python -m chain429.fakes --port N``, or with a
script, ``chain429 fake`` (``chain429.fakes.script``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import cast

import httptools

from chain429.fakes.replies import (
    COMPLETION,
    FALLBACK_MODEL,
    TEXT_COMPLETION,
    ReceivedRequest,
    Reply,
    Route,
    dumps,
    embeddings_body,
    fill_model,
    head,
    in_kind,
    request_model,
    route_of,
    static,
)

__all__ = ["FakeProvider", "ReceivedRequest", "Reply", "run_fake_provider_forever"]


ReplySource = Reply | Callable[[ReceivedRequest], Reply]


class _Stop(Exception):
    """The reply ended the connection on purpose (a cut)."""


class FakeProvider:
    """OpenAI-compatible server playing scripted replies; see the module docstring."""

    def __init__(
        self,
        name: str = "fake",
        default: ReplySource | None = None,
        *,
        record: bool = True,
        models: Sequence[str] = (FALLBACK_MODEL,),
    ) -> None:
        self.name = name
        self.record = record  # False for benchmarks: the list would grow without bound
        self.models = list(models)
        self.requests: list[ReceivedRequest] = []
        self.disconnects = 0  # requests whose client left before the reply was fully sent
        self.connections_opened = 0
        self.host, self.port = "127.0.0.1", 0
        # Unscripted, a streaming request gets a stream and any other a completion.
        self._default: ReplySource = (
            default
            if default is not None
            else in_kind(
                Reply(),
                Reply.stream(f"Hello from {name}"),
                Reply.stream(f"Hello from {name}", legacy=True),
            )
        )
        self._script: deque[ReplySource] = deque()
        self._lock = threading.Lock()  # script() is called from the test thread
        self._ids = itertools.count(1)
        self._content = dumps(f"Hello from {name}")
        self._completion_tokens = len(name.split()) + 2
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conns: set[_Conn] = set()
        self._stopping = False
        self._thread: threading.Thread | None = None  # thread mode only
        self._stop_event: asyncio.Event | None = None

    def script(self, *replies: ReplySource) -> None:
        """Queue answers, consumed in order, one per request on any of the three routes."""
        with self._lock:
            self._script.extend(replies)

    def always(self, reply: ReplySource) -> None:
        self._default = reply

    def reset(self) -> None:
        """Forget the script, the recorded requests and the counters."""
        with self._lock:
            self._script.clear()
        self.requests.clear()
        self.disconnects = self.connections_opened = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def _answer(
        self, method: bytes, target: bytes, raw: list[tuple[bytes, bytes]], body: bytes
    ) -> bytes | Reply:
        """Bytes to write now, or a Reply that needs time (delay, stream, cut, stall)."""
        path = target.split(b"?", 1)[0]
        # endswith: presets with prefixed base URLs (".../openai/v1") hit the fake too.
        route = route_of(path)
        if route is not None:
            if method != b"POST":
                return static(Reply.error(405, "Use POST"))
            source = self._default
            if self._script:
                with self._lock:
                    if self._script:
                        source = self._script.popleft()
            if self.record or not isinstance(source, Reply):
                req = ReceivedRequest(
                    method.decode("latin-1"),
                    path.decode("latin-1"),
                    {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw},
                    body,
                )
                if self.record:
                    self.requests.append(req)
                if not isinstance(source, Reply):
                    source = source(req)
            if source._immediate:
                payload = self._payload(source, body, route)
                return head(source, len(payload)) + payload
            return source
        if path.endswith(b"/models") and method == b"GET":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": self.name}
                for m in self.models
            ]
            return static(Reply(body={"object": "list", "data": data}))
        return static(Reply.error(404, f"Unknown path {path.decode('latin-1')}", "unknown_url"))

    def _payload(self, reply: Reply, req_body: bytes, route: Route = "chat") -> bytes:
        """The body to send for a plain (Content-Length) reply to this request."""
        if reply._static is not None:
            return reply._static
        if reply.body is None:
            if route == "embeddings":
                return embeddings_body(req_body, request_model(req_body))
            return self._completion(
                req_body, TEXT_COMPLETION if route == "completions" else COMPLETION
            )
        assert isinstance(reply.body, dict)  # a dict with "model": None, filled per request
        return dumps(fill_model(reply.body, request_model(req_body)))

    def _completion(self, req_body: bytes, template: bytes = COMPLETION) -> bytes:
        model = dumps(request_model(req_body))
        prompt = max(1, len(req_body) // 4)
        done = self._completion_tokens
        return template % (
            next(self._ids),
            int(time.time()),
            model,
            self._content,
            prompt,
            done,
            prompt + done,
        )

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeProvider:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._server = await self._loop.create_server(lambda: _Conn(self), host, port, backlog=1024)
        self.host, self.port = host, self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Close the listener and every connection; cancel delays; await our tasks."""
        if self._server is None:
            return
        self._stopping = True
        self._server.close()
        tasks = [c.task for c in self._conns if c.task is not None]
        for conn in list(self._conns):
            conn.transport.abort()  # not close(): a client that stopped reading blocks a flush
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        # abort() schedules connection_lost; let it run so sockets close on this loop.
        for _ in range(100):
            if not self._conns:
                break
            await asyncio.sleep(0)
        self._server = None

    async def __aenter__(self) -> FakeProvider:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> FakeProvider:
        """Serve on a new loop in a daemon thread; return once listening."""
        ready = threading.Event()
        failed: list[BaseException] = []

        async def main() -> None:
            self._stop_event = asyncio.Event()
            try:
                await self.start(host, port)
            except BaseException as exc:  # re-raised in the caller's thread
                failed.append(exc)
                return
            finally:
                ready.set()
            await self._stop_event.wait()
            await self.stop()

        def run() -> None:
            loop = _new_loop()
            try:
                loop.run_until_complete(main())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-provider-{self.name}", daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            self._thread.join()
            self._thread = None
            raise failed[0]
        return self

    def stop_thread(self) -> None:
        thread, loop, event = self._thread, self._loop, self._stop_event
        if thread is None or loop is None or event is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(event.set)
        thread.join()
        self._thread = self._stop_event = None

    def __enter__(self) -> FakeProvider:
        return self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.stop_thread()


# method, target, raw headers, body, keep-alive
_Req = tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes, bool]


class _Conn(asyncio.Protocol):
    """One client connection. Answers strictly in request order (pipelining): while a
    slow answer is in flight, later requests wait in `pending`."""

    __slots__ = (
        "body",
        "draining",
        "headers",
        "p",
        "parser",
        "pending",
        "task",
        "transport",
        "url",
    )
    transport: asyncio.Transport  # set in connection_made

    def __init__(self, provider: FakeProvider) -> None:
        self.p = provider
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.pending: deque[_Req] = deque()
        self.task: asyncio.Task[None] | None = None
        self.draining: asyncio.Future[None] | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.p.connections_opened += 1
        self.p._conns.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:  # a scripted callable raised
            self._fail(exc.__context__ or exc)
        except httptools.HttpParserError:  # includes upgrade requests: not supported
            self.pending.clear()
            if self.task is None:
                err = Reply.error(400, "Malformed HTTP request", "bad_request")
                self.transport.write(static(err))
            self.transport.close()

    def _fail(self, exc: BaseException, answer: bool = True) -> None:
        # A broken script must show up in the test (a 500 naming it, and the loop's
        # exception log), not vanish as a silent close.
        asyncio.get_running_loop().call_exception_handler(
            {"message": "fake provider reply failed", "exception": exc}
        )
        self.pending.clear()
        if answer and self.task is None:
            err = Reply.error(500, f"fake provider script failed: {exc!r}", "fake_script")
            self.transport.write(static(err))
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        p = self.p
        p._conns.discard(self)
        if self.task is not None and not self.task.done():
            if not p._stopping:
                p.disconnects += 1 + len(self.pending)
            self.task.cancel()
        if self.draining is not None and not self.draining.done():
            self.draining.set_result(None)

    def pause_writing(self) -> None:
        self.draining = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.draining is not None and not self.draining.done():
            self.draining.set_result(None)
        self.draining = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self.url += url  # may arrive in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        req = (
            self.parser.get_method(),
            self.url,
            self.headers,
            b"".join(self.body),
            self.parser.should_keep_alive(),
        )
        if self.task is not None:
            self.pending.append(req)
            return
        self._serve(req)

    # answering
    def _serve(self, req: _Req) -> None:
        """Fast path: write immediate answers inline; hand the rest to one task."""
        while True:
            out = self.p._answer(req[0], req[1], req[2], req[3])
            if not isinstance(out, bytes):
                self.task = asyncio.get_running_loop().create_task(self._slow(out, req))
                return
            self.transport.write(out)
            if not req[4]:
                self.transport.close()
                return
            if not self.pending:
                return
            req = self.pending.popleft()

    async def _slow(self, reply: Reply, req: _Req) -> None:
        try:
            await self._play(reply, req[3], route_of(req[1].split(b"?", 1)[0]) or "chat")
        except _Stop:
            self.pending.clear()
            return
        except Exception as exc:  # (CancelledError is not one: a disconnect passes through)
            self._fail(exc, answer=False)  # headers may be out: only a cut is honest
            return
        finally:
            self.task = None
        if not req[4]:
            self.transport.close()
        elif self.pending and not self.transport.is_closing():
            self._serve(self.pending.popleft())

    async def _play(self, reply: Reply, req_body: bytes, route: Route = "chat") -> None:
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        if reply.drop == "hang":
            await asyncio.get_running_loop().create_future()  # until the client leaves
        if reply.drop == "reset":
            self._reset()
        write = self.transport.write
        cut, stall = reply.cut_after, reply.stall_after
        if reply.chunks is None:
            payload = self.p._payload(reply, req_body, route)
            framing = head(reply, len(payload))
            if cut is not None and (stall is None or cut <= stall):
                write(framing + payload[:cut])
                self._cut()
            write(framing + (payload if stall is None else payload[:stall]))
            if stall is not None:
                await asyncio.get_running_loop().create_future()  # until cancelled
            return
        write(
            b"".join(
                (
                    reply._prefix,
                    b"transfer-encoding: chunked\r\n",
                    b"cache-control: no-cache\r\n",
                    reply._extra,
                    b"\r\n",
                )
            )
        )
        model = None
        for i, part in enumerate((*reply._parts, None)):
            if i == cut:
                self._cut()
            if i == stall:
                await asyncio.get_running_loop().create_future()  # until cancelled
            if part is None:
                break
            if i == 0 and reply.first_chunk_delay > 0:
                await asyncio.sleep(reply.first_chunk_delay)
            if reply.chunk_delay > 0:
                await asyncio.sleep(reply.chunk_delay)
            if isinstance(part, dict):
                model = model or request_model(req_body)
                part = b"data: " + dumps(fill_model(part, model)) + b"\n\n"
            if part:  # an empty chunk would end the chunked body
                write(b"%x\r\n%b\r\n" % (len(part), part))
            if self.draining is not None:
                await self.draining
            if self.transport.is_closing():
                return
        if reply._forever is not None:
            await self._forever(reply, req_body)
            return
        write(b"0\r\n\r\n")

    async def _forever(self, reply: Reply, req_body: bytes) -> None:
        """Send `reply.forever` every `chunk_delay` until the client leaves (or we stop)."""
        part = reply._forever
        if isinstance(part, dict):
            part = b"data: " + dumps(fill_model(part, request_model(req_body))) + b"\n\n"
        assert part, "an empty chunk would end the chunked body"
        framed = b"%x\r\n%b\r\n" % (len(part), part)
        delay = max(reply.chunk_delay, 0.01)
        while not self.transport.is_closing():
            await asyncio.sleep(delay)
            self.transport.write(framed)
            if self.draining is not None:
                await self.draining

    def _reset(self) -> None:
        # SO_LINGER 0 turns the close into a TCP RST, as a crashed server's kernel
        # sends; where the option cannot be set, a plain close before any byte is
        # the same failure to an HTTP client (no status line).
        sock = self.transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError, TypeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()
        raise _Stop

    def _cut(self) -> None:
        # close(), not abort(): what was written must arrive, then a FIN mid-body, which
        # an HTTP client reports as an incomplete message.
        self.transport.close()
        raise _Stop


def _new_loop() -> asyncio.AbstractEventLoop:
    try:  # optional: faster, but the fake must work with the stdlib alone
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_fake_provider_forever(
    host: str,
    port: int,
    reply: ReplySource | None = None,
    *,
    name: str = "fake",
    announce: str | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. Records nothing, so memory stays flat under load.

    Once listening, prints the base URL on stdout, and `announce` on stderr.
    """
    fake = FakeProvider(name, reply, record=False)

    async def main() -> None:
        await fake.start(host, port)
        print(f"listening on {fake.base_url}", flush=True)  # a parent reads the port here
        if announce:
            print(announce, file=sys.stderr, flush=True)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows
                loop.add_signal_handler(sig, done.set)
        try:
            await done.wait()
        finally:
            await fake.stop()

    loop = _new_loop()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            loop.run_until_complete(main())
    finally:
        loop.close()


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m chain429.fakes", description="Run the fake OpenAI-compatible provider."
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    ap.add_argument("--name", default="fake")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    ap.add_argument("--status", type=int, default=200, help="answer every request with this")
    args = ap.parse_args(argv)
    if args.status == 200:  # a stream for a streaming request, as unscripted fakes do
        text = f"Hello from {args.name}"
        stream = Reply.stream(text, delay=args.delay)
        legacy = Reply.stream(text, delay=args.delay, legacy=True)
        reply: ReplySource = in_kind(Reply(delay=args.delay), stream, legacy)
    else:
        reply = dataclasses.replace(Reply.error(args.status), delay=args.delay)
    run_fake_provider_forever(args.host, args.port, reply, name=args.name)


if __name__ == "__main__":
    main()
