"""A lean closed-loop HTTP/1.1 load generator, run as its own process.

    python bench/loadgen.py --port N --concurrency 32 --seconds 5 --warmup 1 [--stream]

Prints one JSON object on stdout: requests/s, latency percentiles (ms), errors,
and this process's own CPU share over the window (`client_cpu`). `--stream`
sends `"stream": true` and reads SSE over chunked encoding instead
(`loadgen_stream.py`); it adds time-to-first-event percentiles (`ttfb_*`).

Why not httpx/aiohttp: on a 2-core machine the generator competes for CPU with
the server under test, so every microsecond it spends per request is stolen
from what we measure. This one is an `asyncio.Protocol` over raw sockets with
the request pre-encoded once; per response it does one `find` for the header
end, one slice for Content-Length and one write for the next request. Each
connection is a closed loop (send, wait for the whole answer, send again) run
from `data_received` itself, so there is no task wake-up or future per request.
Latency is taken with `perf_counter_ns` from just before the write to the
moment the last body byte arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Any, cast

from loadgen_stream import DEEP_CHECKS, STREAM_BODY, StreamConn

BODY = b'{"model": "bench", "messages": [{"role": "user", "content": "hello"}]}'


def build_request(
    host: str, port: int, path: str, api_key: str | None, stream: bool = False
) -> bytes:
    auth = f"authorization: Bearer {api_key}\r\n" if api_key else ""
    body = STREAM_BODY if stream else BODY
    accept = "text/event-stream" if stream else "application/json"
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"host: {host}:{port}\r\n"
        "content-type: application/json\r\n"
        f"accept: {accept}\r\n"
        f"{auth}"
        f"content-length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body


class Run:
    """Shared clock and counters for all connections of one measurement."""

    def __init__(self, request: bytes, measure_from: int, measure_until: int) -> None:
        self.request = request
        self.measure_from = measure_from  # perf_counter_ns; warm-up answers before it
        self.measure_until = measure_until  # no new request starts at or after it
        self.latencies = array("q")  # ns, measured window only (streams: until the end)
        self.ttfb = array("q")  # ns, streams only: until the first `data:` event
        self.deep_left = 0  # streams: how many more get the full per-event check
        self.cpu = [0.0, 0.0]  # process_time at the window's start and end
        self.errors = 0  # measured window only: non-2xx, framing, lost connections
        self.error_kinds: dict[str, int] = {}

    def error(self, kind: str, started: int) -> None:
        if started >= self.measure_from:
            self.errors += 1
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


class Conn(asyncio.Protocol):
    """One keep-alive connection in a closed loop; `done` resolves when it stops."""

    def __init__(self, run: Run, done: asyncio.Future[None]) -> None:
        self.run = run
        self.done = done
        self.buf = bytearray()
        self.need = -1  # total bytes (head + body) of the current answer, once known
        self.started = 0
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
        self.started = now
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = _content_length(bytes(buf[:end]))
            if length < 0:  # chunked or close-delimited: not what this bench measures
                self.fail("no_content_length")
                return
            self.need = end + 4 + length
        if len(buf) < self.need:
            return
        finished = time.perf_counter_ns()
        if len(buf) > self.need:  # we never pipeline, so extra bytes are a server bug
            self.fail("extra_bytes")
            return
        ok = buf[9:10] == b"2"  # "HTTP/1.1 200": first digit of the status
        run, started = self.run, self.started
        if ok and started >= run.measure_from:
            run.latencies.append(finished - started)
        elif not ok:
            run.error(f"status_{bytes(buf[9:12]).decode('latin-1')}", started)
        buf.clear()
        self.need = -1
        self.send()

    def fail(self, kind: str) -> None:
        self.run.error(kind, self.started)
        self.buf.clear()  # counted once here, not again in connection_lost
        self.need = -1
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.need >= 0 or self.buf:  # died mid-answer
            self.run.error("connection_lost", self.started)
        if not self.done.done():
            self.done.set_result(None)


def _content_length(head: bytes) -> int:
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        return -1
    start = at + 17
    end = lower.find(b"\r\n", start)
    return int(lower[start : end if end >= 0 else None])


ConnFactory = Callable[[Run, "asyncio.Future[None]"], asyncio.Protocol]


async def _connection(run: Run, host: str, port: int, proto: ConnFactory) -> None:
    """Keep one connection going until the window ends; reconnect if the server drops it."""
    loop = asyncio.get_running_loop()
    while time.perf_counter_ns() < run.measure_until:
        done: asyncio.Future[None] = loop.create_future()
        try:
            await loop.create_connection(functools.partial(proto, run, done), host, port)
        except OSError:
            run.error("connect_error", time.perf_counter_ns())
            await asyncio.sleep(0.05)  # bounded retry rate: a dead server is not spun on
            continue
        await done


async def measure(
    host: str,
    port: int,
    request: bytes,
    concurrency: int,
    seconds: float,
    warmup: float,
    stream: bool = False,
) -> dict[str, Any]:
    start = time.perf_counter_ns()
    measure_from = start + int(warmup * 1e9)
    measure_until = measure_from + int(seconds * 1e9)
    run = Run(request, measure_from, measure_until)
    run.deep_left = DEEP_CHECKS if stream else 0
    loop = asyncio.get_running_loop()

    def cpu_mark(i: int) -> None:  # the generator's own CPU time at the window's edges
        run.cpu[i] = time.process_time()

    loop.call_later(warmup, cpu_mark, 0)
    loop.call_later(warmup + seconds, cpu_mark, 1)
    proto: ConnFactory = StreamConn if stream else Conn
    tasks = [asyncio.ensure_future(_connection(run, host, port, proto)) for _ in range(concurrency)]
    # Answers in flight at the end get a grace period; a hung server cannot hang us.
    deadline = (measure_until - time.perf_counter_ns()) / 1e9 + 5.0
    _, pending = await asyncio.wait(tasks, timeout=max(deadline, 0.1))
    for task in pending:
        task.cancel()
        run.error("timeout", measure_from)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*pending, return_exceptions=True)
    return summarize(run, concurrency, seconds, stream)


def percentile(sorted_ns: Sequence[int], q: float) -> float:
    """Nearest-rank percentile, in ms."""
    if not sorted_ns:
        return float("nan")
    rank = max(0, min(len(sorted_ns) - 1, int(q / 100 * len(sorted_ns) + 0.5) - 1))
    return sorted_ns[rank] / 1e6


def summarize(run: Run, concurrency: int, seconds: float, stream: bool) -> dict[str, Any]:
    lat = sorted(run.latencies)
    out = {
        "mode": "stream" if stream else "plain",
        "concurrency": concurrency,
        "seconds": seconds,
        "requests": len(lat),
        "rps": len(lat) / seconds,
        "p50_ms": percentile(lat, 50),
        "p90_ms": percentile(lat, 90),
        "p99_ms": percentile(lat, 99),
        "max_ms": lat[-1] / 1e6 if lat else float("nan"),
        "errors": run.errors,
        "error_kinds": run.error_kinds,
        "client_cpu": (run.cpu[1] - run.cpu[0]) / seconds if run.cpu[1] else float("nan"),
    }
    if stream:
        ttfb = sorted(run.ttfb)
        out |= {f"ttfb_p{q}_ms": percentile(ttfb, q) for q in (50, 90, 99)}
        out["deep_checked"] = DEEP_CHECKS - run.deep_left  # streams parsed event by event
    return out


def _new_loop() -> asyncio.AbstractEventLoop:
    try:  # optional: uvloop roughly halves the generator's own cost per request
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Closed-loop HTTP/1.1 keep-alive load generator.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/v1/chat/completions")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--stream", action="store_true", help="SSE streams instead of completions")
    args = ap.parse_args(argv)
    request = build_request(args.host, args.port, args.path, args.api_key, args.stream)
    loop = _new_loop()
    try:
        result = loop.run_until_complete(
            measure(
                args.host,
                args.port,
                request,
                args.concurrency,
                args.seconds,
                args.warmup,
                args.stream,
            )
        )
    finally:
        loop.close()
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
