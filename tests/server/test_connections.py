"""Slow and hostile client connections stay bounded: deadlines, keep-alive, the cap.

Every test talks to a real server over raw sockets on 127.0.0.1 with deadlines
shrunk in its config, and times what a client sees.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import socket
import statistics
import threading
import time
from collections.abc import Iterator

import httpx
from prometheus_client.parser import text_string_to_metric_families

from chain429.fakes.replies import Reply
from fixtures.servers import PROXY_KEY, chain_config, provider_entry

HELLO = [{"role": "user", "content": "hi"}]
AUTH = f"authorization: Bearer {PROXY_KEY}\r\n".encode()


def start(fake, proxy, **settings):
    upstream = fake("a")
    return proxy(chain_config([provider_entry("a", upstream)], [("a", "m")], settings=settings))


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, limit_s: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(limit_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def trickle(sock: socket.socket, data: Iterator[bytes], every_s: float, limit_s: float):
    """Send one piece every `every_s` until the server answers or closes.

    Returns (seconds until the server spoke or hung up, pieces sent, what it sent).
    """
    began = time.monotonic()
    sent = 0
    for piece in data:
        try:
            sock.sendall(piece)
            sent += 1
        except OSError:  # the server closed first: broken pipe or reset
            break
        readable, _, _ = select.select([sock], [], [], every_s)
        if readable or time.monotonic() - began > limit_s:
            break
    cut_after = time.monotonic() - began
    return cut_after, sent, read_until_closed(sock)


def endless(byte: bytes = b"a") -> Iterator[bytes]:
    while True:
        yield byte


def error_of(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]


def metric(p, name: str, **labels: str) -> float:
    text = httpx.get(f"{p.url}/metrics", headers={"authorization": f"Bearer {PROXY_KEY}"}).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_trickled_headers_are_cut_at_the_header_deadline(fake, proxy):
    p = start(fake, proxy, clientHeaderTimeoutMs=600)
    sock = connect(p.url)
    sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ")
    # One byte every 0.2 s: Sanic's own timeout, reset by each byte, never fires.
    cut_after, sent, answer = trickle(sock, endless(), every_s=0.2, limit_s=4)
    assert 0.55 <= cut_after <= 1.5
    assert sent >= 3  # the client was still sending when it was cut
    status, error = error_of(answer)
    assert status == 408
    assert error["code"] == "request_timeout" and error["type"] == "invalid_request_error"
    assert "headers not received within 0.6 s" in error["message"]
    assert metric(p, "chain429_connection_timeouts_total", phase="headers") == 1


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(fake, proxy):
    p = start(fake, proxy, clientHeaderTimeoutMs=500, keepAliveTimeoutMs=60000)
    sock = connect(p.url)
    began = time.monotonic()
    assert read_until_closed(sock) == b""  # nothing to answer: just closed
    assert 0.45 <= time.monotonic() - began <= 1.2


def test_headers_of_a_later_request_are_timed_from_its_first_byte(fake, proxy):
    p = start(fake, proxy, clientHeaderTimeoutMs=500, keepAliveTimeoutMs=60000)
    sock = connect(p.url)
    time.sleep(0.3)  # most of the deadline passes before the first request
    sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    time.sleep(0.6)  # idle longer than the header deadline: keep-alive, not headers
    sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ")
    cut_after, _, answer = trickle(sock, endless(), every_s=0.1, limit_s=4)
    assert 0.45 <= cut_after <= 1.3
    assert error_of(answer)[0] == 408


def test_a_trickled_body_is_cut_at_the_body_deadline(fake, proxy):
    p = start(fake, proxy, clientBodyTimeoutMs=800)
    sock = connect(p.url)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + AUTH
        + b"content-length: 1000\r\n\r\n{"
    )
    cut_after, sent, answer = trickle(sock, endless(b" "), every_s=0.2, limit_s=4)
    assert 0.75 <= cut_after <= 1.7
    assert sent >= 4
    status, error = error_of(answer)
    assert status == 408 and error["code"] == "request_timeout"
    assert "body not received within 0.8 s" in error["message"]
    assert metric(p, "chain429_connection_timeouts_total", phase="body") == 1


def test_a_body_in_time_is_answered(fake, proxy):
    """The deadlines are totals, and a client within them is served as before."""
    p = start(fake, proxy, clientHeaderTimeoutMs=2000, clientBodyTimeoutMs=2000)
    body = json.dumps({"model": "main", "messages": HELLO}).encode()
    sock = connect(p.url)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + AUTH
        + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    )
    for i in range(0, len(body), len(body) // 4 + 1):  # in pieces, 0.2 s apart
        time.sleep(0.2)
        sock.sendall(body[i : i + len(body) // 4 + 1])
    answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(fake, proxy):
    p = start(fake, proxy, keepAliveTimeoutMs=500)
    sock = connect(p.url)
    request = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
    sock.sendall(request)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    time.sleep(0.3)  # within the idle timeout the connection is reused
    sock.sendall(request)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    idle_since = time.monotonic()
    assert read_until_closed(sock) == b""
    assert 0.45 <= time.monotonic() - idle_since <= 1.2


def test_past_the_connection_cap_new_connections_are_refused_at_once(fake, proxy, caplog):
    caplog.set_level(logging.WARNING, logger="chain429")
    p = start(fake, proxy, maxConnections=20)
    held = [connect(p.url) for _ in range(20)]
    try:
        began = time.monotonic()
        extra = connect(p.url)
        status, error = error_of(read_until_closed(extra))
        assert time.monotonic() - began < 1.0  # refused at once, not queued
        assert status == 503 and error["code"] == "too_many_connections"
        assert error_of(read_until_closed(connect(p.url)))[0] == 503
        warnings = [r.getMessage() for r in caplog.records if "connection limit" in r.getMessage()]
        # One line for both refusals: the warning is rate-limited.
        assert warnings == [
            "connection limit reached: 20 connections open (settings.maxConnections); "
            "new connections are refused with 503 until some close"
        ]
        # The held connections are still served.
        held[0].sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        assert held[0].recv(65536).startswith(b"HTTP/1.1 200")
        for sock in held[:5]:
            sock.close()
        deadline = time.monotonic() + 3
        while True:  # the server notices the closes within a moment
            with connect(p.url) as again:
                again.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                answer = read_until_closed(again)
            if answer.startswith(b"HTTP/1.1 200") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert answer.startswith(b"HTTP/1.1 200")
        assert metric(p, "chain429_connections_refused_total") >= 2
        deadline = time.monotonic() + 3
        while metric(p, "chain429_open_connections") != 16 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(p, "chain429_open_connections") == 16  # 15 held + this scrape
    finally:
        for sock in held:
            sock.close()


async def _slowloris(url: str, count: int, every_s: float, results: list[float]) -> None:
    host, port = url.removeprefix("http://").split(":")

    async def one() -> None:
        began = time.monotonic()  # the server's clock starts at accept, a little later
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-slow: ")
        try:
            while time.monotonic() - began < 10:
                try:
                    if await asyncio.wait_for(reader.read(65536), every_s) is not None:
                        break  # an answer (the 408) or the close
                except TimeoutError:
                    writer.write(b"a")
                    await writer.drain()
        except OSError:
            pass
        results.append(time.monotonic() - began)
        writer.close()

    await asyncio.gather(*(one() for _ in range(count)))


def test_300_slow_trickle_connections_do_not_stop_normal_requests(fake, proxy):
    p = start(fake, proxy, clientHeaderTimeoutMs=2000)
    cut_after: list[float] = []
    attack = threading.Thread(
        target=lambda: asyncio.run(_slowloris(p.url, 300, 0.2, cut_after)), daemon=True
    )
    attack.start()
    time.sleep(0.5)  # all 300 are open and trickling
    client = p.openai()
    latencies = []
    until = time.monotonic() + 1.2  # before the trickles' header deadline
    while time.monotonic() < until:
        began = time.monotonic()
        reply = client.chat.completions.create(model="main", messages=HELLO)
        latencies.append(time.monotonic() - began)
        assert reply.choices[0].message.content
    attack.join(timeout=8)
    assert not attack.is_alive()
    print(
        f"{len(latencies)} requests, median {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms; trickles cut after {min(cut_after):.2f}-"
        f"{max(cut_after):.2f} s"
    )
    assert len(latencies) >= 10
    assert max(latencies) < 1.0 and statistics.median(latencies) < 0.2
    # Meanwhile every trickler was cut at the header deadline (a connect whose SYN
    # the kernel dropped in the burst is accepted a second late, and cut later).
    assert len(cut_after) == 300
    assert 2.0 <= min(cut_after) <= max(cut_after) <= 4.5


def test_600_streams_held_open_at_once_all_get_their_first_token(fake, proxy):
    """Each open stream holds an upstream connection too: the upstream pool is as
    large as `maxConnections`, so streams past the old pool of 512 are not stalled
    into a first-token timeout (found by bench/shape_bench.py's 1,000 open streams)."""
    stalling = fake("a", default=Reply.stream("one two three", stall_after=2), record=False)
    p = proxy(
        chain_config(
            [provider_entry("a", stalling)],
            [("a", "m")],
            settings={"firstTokenTimeoutMs": 5000, "streamIdleTimeoutMs": 30000},
        )
    )
    held = asyncio.run(_hold_streams(p.url, 600))
    assert held == 600


async def _hold_streams(url: str, count: int) -> int:
    """Open `count` streams at once, read each to its first content event, then close all."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"model": "main", "stream": True, "messages": HELLO}).encode()
    head = (
        (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}:{port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        ).encode()
        + AUTH
        + b"\r\n"
    )

    async def one() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(head + body)
        seen = b""
        while b'"content":"one' not in seen.replace(b" ", b""):
            chunk = await asyncio.wait_for(reader.read(4096), 10)
            assert chunk, f"the stream ended before its first token: {seen[:300]!r}"
            seen += chunk
        return writer

    writers: list[asyncio.StreamWriter] = []
    try:
        async with asyncio.timeout(60):
            for start in range(0, count, 100):  # waves: no SYN burst past the listen queue
                writers += await asyncio.gather(*(one() for _ in range(min(100, count - start))))
    finally:
        for writer in writers:
            writer.close()
    return len(writers)
