"""Talking to providers: one pooled HTTP client, timeouts, and nothing else.

Every provider call goes through `Upstream`, so connection reuse, the
connect-versus-response timeout split and the naming of transport failures
live in one place. Failures come back as `UpstreamError(kind)` with a kind the
outcome classifier understands; httpx's exception zoo stays in here.

Bodies are read raw and decoded here, not by httpx: httpx inflates gzip
without a ceiling, so a small compressed answer could cost gigabytes. Every
answer is bounded by the caller's `max_bytes`, on the wire and decoded
(`upstream_too_large`).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from chain429.upstream.decoding import DecodeError, Inflater, inflater_for
from chain429.upstream.transport import AiohttpTransport


class UpstreamError(Exception):
    """A provider call that produced no (complete, acceptable) HTTP answer."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind  # one of outcome.TRANSPORT_ERRORS


def _named(exc: httpx.HTTPError) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError("timeout", type(exc).__name__)
    if isinstance(exc, httpx.ConnectError):
        return UpstreamError("connect_error", str(exc))
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return UpstreamError("connection_reset", type(exc).__name__)
    return UpstreamError("upstream_error", type(exc).__name__)


@contextmanager
def _named_errors() -> Iterator[None]:
    try:
        yield
    except httpx.HTTPError as exc:
        raise _named(exc) from exc


def _length(value: str | None) -> int | None:
    """A Content-Length's value; None when absent or not a plain number."""
    return int(value) if value and value.isascii() and value.isdigit() else None


def _too_large(limit: int, what: str) -> UpstreamError:
    return UpstreamError("upstream_too_large", f"{what} over {limit} bytes")


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    status: int
    headers: httpx.Headers
    body: bytes


class UpstreamStream:
    """An answer whose body is read as it arrives; always `aclose()` it.

    The body is bounded: more than `max_bytes`, on the wire or after undoing a
    gzip/deflate Content-Encoding, raises `UpstreamError("upstream_too_large")`
    once that much has been read, so at most `max_bytes` (plus one read) is ever
    held. A stream past its commit point lifts the limit (`lift_limit`): it is
    relayed, not held, and bounded by the event size and its duration instead.
    """

    def __init__(self, response: httpx.Response, max_bytes: int) -> None:
        self._response = response
        self._chunks: AsyncIterator[bytes] = response.aiter_raw()
        self.status = response.status_code
        self.headers = response.headers
        self.max_bytes = max_bytes
        self._received = 0  # bytes handed on (decoded)
        self._wire = 0  # bytes read, when they are inflated
        # Our transport hands these on from aiohttp's headers (cheaper); any other reads them here.
        extensions = response.extensions
        if "content_encoding" in extensions:
            encoding, length = extensions["content_encoding"], extensions["content_length"]
        else:
            encoding = response.headers.get("content-encoding")
            length = response.headers.get("content-length")
        self._inflater = inflater_for(encoding)
        self.declared_length = _length(length)

    def lift_limit(self) -> None:
        self.max_bytes = sys.maxsize

    async def _read(self) -> bytes:
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            return b""
        except httpx.HTTPError as exc:
            raise _named(exc) from exc

    async def next_chunk(self) -> bytes:
        """The next bytes of the body; b"" once it has ended cleanly."""
        if self._inflater is not None:
            return await self._next_inflated(self._inflater)
        chunk = await self._read()
        self._received += len(chunk)
        if self._received > self.max_bytes:
            raise _too_large(self.max_bytes, "body")
        return chunk

    async def _next_inflated(self, inflater: Inflater) -> bytes:
        try:
            while True:
                if inflater.pending:
                    out = inflater.more()
                else:
                    raw = await self._read()
                    if not raw:
                        return b""
                    self._wire += len(raw)
                    if self._wire > self.max_bytes:
                        raise _too_large(self.max_bytes, "compressed body")
                    out = inflater.feed(raw)
                if out:
                    self._received += len(out)
                    if self._received > self.max_bytes:
                        raise _too_large(self.max_bytes, f"body after {inflater.encoding}")
                    return out
        except DecodeError as exc:
            raise UpstreamError("upstream_error", str(exc)) from exc

    async def read_body(self, limit: int = 65536) -> bytes:
        """Up to `limit` bytes of an answer that is not a stream (an error body, say)."""
        body = b""
        while len(body) < limit:
            chunk = await self.next_chunk()
            if not chunk:
                break
            body += chunk
        return body[:limit]

    async def read_all(self) -> bytes:
        """The whole body (within `max_bytes`)."""
        chunks = []
        while chunk := await self.next_chunk():
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def aclose(self) -> None:
        # Close the iterator ourselves: left to the garbage collector, an
        # abandoned async generator is finalized at an arbitrary later time.
        await self._chunks.aclose()  # type: ignore[attr-defined]
        await self._response.aclose()


# Headers of ours that must not be forwarded, or that httpx sets itself.
_HOP_BY_HOP = frozenset({"host", "content-length", "connection", "transfer-encoding"})


class Upstream:
    def __init__(
        self,
        *,
        connect_timeout_s: float = 5.0,
        max_connections: int = 512,
        allowed_private: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        """`allowed_private`: the private upstreams allowed now (settings.allowPrivateUpstreams)."""
        self._connect_timeout_s = connect_timeout_s
        self._client = httpx.AsyncClient(
            transport=AiohttpTransport(
                max_connections=max_connections,
                keepalive_expiry=60.0,
                allowed_private=allowed_private,
            ),
            # Per-call timeouts are set by each call; this is only a backstop.
            timeout=httpx.Timeout(30.0, connect=connect_timeout_s),
            follow_redirects=False,
            trust_env=False,
            # What `UpstreamStream` can inflate within its limit. Pinned: httpx would
            # otherwise also offer br and zstd whenever their packages are installed.
            # A default, not a per-request header: overriding one costs httpx a
            # header merge on every call (measured: ~1% of a stream's CPU).
            headers={"accept-encoding": "gzip, deflate"},
        )

    async def _send(
        self,
        url: str,
        headers: dict[str, str],
        content: bytes,
        timeout: httpx.Timeout,
        max_bytes: int,
    ) -> UpstreamStream:
        """POST; return once the response headers are in. Raises httpx errors."""
        request = self._client.build_request(
            "POST", url, content=content, headers=headers, timeout=timeout
        )
        stream = UpstreamStream(await self._client.send(request, stream=True), max_bytes)
        length = stream.declared_length
        if length is not None and length > max_bytes:
            await stream.aclose()  # unread: the connection is dropped, not reused
            raise _too_large(max_bytes, f"Content-Length {length}")
        return stream

    async def post(
        self,
        url: str,
        headers: dict[str, str],
        content: bytes,
        *,
        timeout_s: float,
        max_bytes: int,
    ) -> UpstreamReply:
        """POST and read the whole answer within `timeout_s` (connecting has its own limit).

        An answer over `max_bytes` raises `UpstreamError("upstream_too_large")`.
        """
        timeout = httpx.Timeout(timeout_s, connect=min(self._connect_timeout_s, timeout_s))
        try:
            with _named_errors():
                # httpx times each read separately; the deadline covers the whole answer.
                async with asyncio.timeout(timeout_s + self._connect_timeout_s):
                    stream = await self._send(url, headers, content, timeout, max_bytes)
                    try:
                        body = await stream.read_all()
                    finally:
                        await stream.aclose()
                    return UpstreamReply(stream.status, stream.headers, body)
        except TimeoutError as exc:
            raise UpstreamError("timeout", "no complete answer in time") from exc

    async def open_stream(
        self,
        url: str,
        headers: dict[str, str],
        content: bytes,
        *,
        timeout_s: float,
        max_bytes: int,
    ) -> UpstreamStream:
        """POST and return once the response headers are in (within `timeout_s`).

        Reads of the body have no timeout here: the stream relay owns the
        first-token and idle deadlines, which differ before and after the
        first token. The body is bounded by `max_bytes` until `lift_limit()`.
        """
        timeout = httpx.Timeout(None, connect=min(self._connect_timeout_s, timeout_s))
        try:
            with _named_errors():
                async with asyncio.timeout(timeout_s + self._connect_timeout_s):
                    return await self._send(url, headers, content, timeout, max_bytes)
        except TimeoutError as exc:
            raise UpstreamError("timeout", "no response headers in time") from exc

    async def aclose(self) -> None:
        await self._client.aclose()


def request_headers(api_key: str | None, extra: dict[str, str]) -> dict[str, str]:
    """The headers every call to one provider carries; built once per config snapshot."""
    headers = {"content-type": "application/json", "accept": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    for name, value in extra.items():
        if name.lower() not in _HOP_BY_HOP:
            headers[name] = value
    return headers
