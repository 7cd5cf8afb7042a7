"""Talking to providers: one pooled HTTP client, timeouts, and nothing else.

Every provider call goes through `Upstream`, so connection reuse, the
connect-versus-response timeout split and the naming of transport failures
live in one place. Failures come back as `UpstreamError(kind)` with a kind the
outcome classifier understands; aiohttp's exception zoo stays in here.

Calls use aiohttp's client directly (transport.py says why): what does not
change between calls to one provider (its URL object, its timeouts) is built
once and kept, and the caller's header dict (built once per config snapshot,
runtime.py) is handed to aiohttp as it is, never copied here. Answers expose
aiohttp's parsed headers, a case-insensitive mapping.

Bodies are read raw and decoded here: aiohttp (like httpx) inflates gzip
without a ceiling, so a small compressed answer could cost gigabytes. Every
answer is bounded by the caller's `max_bytes`, on the wire and decoded
(`upstream_too_large`).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import aiohttp
from yarl import URL

from chain429.upstream.decoding import DecodeError, Inflater, inflater_for
from chain429.upstream.transport import new_session


class UpstreamError(Exception):
    """A provider call that produced no (complete, acceptable) HTTP answer."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind  # one of outcome.TRANSPORT_ERRORS


def _named(exc: BaseException) -> UpstreamError:
    """aiohttp's failure as the outcome classifier names it (connect vs read, refused vs reset)."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):  # aiohttp's connect and read timeouts are TimeoutErrors
        return UpstreamError("timeout", type(exc).__name__)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError("connect_error", message)
    if isinstance(
        exc,
        aiohttp.ServerDisconnectedError
        | aiohttp.ClientPayloadError
        | aiohttp.ClientResponseError  # a malformed status line or headers
        | aiohttp.ClientOSError
        | ConnectionError,
    ):
        return UpstreamError("connection_reset", type(exc).__name__)
    return UpstreamError("upstream_error", type(exc).__name__)


def _length(value: str | None) -> int | None:
    """A Content-Length's value; None when absent or not a plain number."""
    return int(value) if value and value.isascii() and value.isdigit() else None


def _too_large(limit: int, what: str) -> UpstreamError:
    return UpstreamError("upstream_too_large", f"{what} over {limit} bytes")


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    status: int
    headers: Mapping[str, str]  # case-insensitive (aiohttp's CIMultiDictProxy)
    body: bytes


class UpstreamStream:
    """An answer whose body is read as it arrives; always `aclose()` it.

    The body is bounded: more than `max_bytes`, on the wire or after undoing a
    gzip/deflate Content-Encoding, raises `UpstreamError("upstream_too_large")`
    once that much has been read, so at most `max_bytes` (plus one read) is ever
    held. A stream past its commit point lifts the limit (`lift_limit`): it is
    relayed, not held, and bounded by the event size and its duration instead.
    """

    def __init__(self, response: aiohttp.ClientResponse, max_bytes: int) -> None:
        self._response = response
        self._content = response.content
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self.max_bytes = max_bytes
        self._received = 0  # bytes handed on (decoded)
        self._wire = 0  # bytes read, when they are inflated
        self._inflater = inflater_for(self.headers.get("content-encoding"))
        self.declared_length = _length(self.headers.get("content-length"))

    def lift_limit(self) -> None:
        self.max_bytes = sys.maxsize

    async def _read(self) -> bytes:
        try:
            # readany: hand bytes on as soon as they arrive (streams must not buffer).
            return await self._content.readany()
        except Exception as exc:
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
        # release() keeps a fully read connection for reuse; close() drops one
        # whose body was abandoned half way, which could not be reused safely.
        if self._content.at_eof():
            self._response.release()
        else:
            self._response.close()


# Headers of ours that must not be forwarded, or that the client sets itself.
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
        self._max_connections = max_connections
        self._allowed_private = allowed_private
        self._session: aiohttp.ClientSession | None = None
        # Built once per provider URL and per timeout, not per call (a config
        # names a few of each; a reload that renames them all starts afresh).
        self._urls: dict[str, URL] = {}
        self._timeouts: dict[tuple[float | None, float], aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on the running loop, as aiohttp wants
            self._session = new_session(
                max_connections=self._max_connections,
                keepalive_expiry=60.0,
                allowed_private=self._allowed_private,
            )
        return self._session

    def _url(self, url: str) -> URL:
        found = self._urls.get(url)
        if found is None:
            if len(self._urls) > 4096:
                self._urls.clear()
            found = self._urls[url] = URL(url)
        return found

    def _timeout(self, read_s: float | None, timeout_s: float) -> aiohttp.ClientTimeout:
        """Each read within `read_s` (None: the stream relay owns read deadlines)."""
        key = (read_s, timeout_s)
        found = self._timeouts.get(key)
        if found is None:
            if len(self._timeouts) > 4096:
                self._timeouts.clear()
            connect = min(self._connect_timeout_s, timeout_s)
            found = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read_s)
            self._timeouts[key] = found
        return found

    async def _send(
        self,
        url: str,
        headers: dict[str, str],
        content: bytes,
        timeout: aiohttp.ClientTimeout,
        max_bytes: int,
    ) -> UpstreamStream:
        """POST; return once the response headers are in. Raises UpstreamError."""
        try:
            response = await self._get_session().request(
                "POST",
                self._url(url),
                headers=headers,
                data=content,
                allow_redirects=False,
                timeout=timeout,
            )
        except Exception as exc:
            raise _named(exc) from exc
        stream = UpstreamStream(response, max_bytes)
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
        timeout = self._timeout(timeout_s, timeout_s)
        try:
            # aiohttp times each read separately; the deadline covers the whole answer.
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
        timeout = self._timeout(None, timeout_s)
        try:
            async with asyncio.timeout(timeout_s + self._connect_timeout_s):
                return await self._send(url, headers, content, timeout, max_bytes)
        except TimeoutError as exc:
            raise UpstreamError("timeout", "no response headers in time") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def request_headers(api_key: str | None, extra: dict[str, str]) -> dict[str, str]:
    """The headers every call to one provider carries; built once per config snapshot."""
    # accept-encoding: what `UpstreamStream` can inflate within its limit.
    headers = {
        "content-type": "application/json",
        "accept": "application/json",
        "accept-encoding": "gzip, deflate",
    }
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    for name, value in extra.items():
        lname = name.lower()
        if lname not in _HOP_BY_HOP:
            headers.pop(lname, None)  # the provider's own spelling replaces our default
            headers[name] = value
    return headers
