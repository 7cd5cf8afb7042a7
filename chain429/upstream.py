"""Talking to providers: one pooled HTTP client, timeouts, and nothing else.

Every provider call goes through `Upstream`, so connection reuse, the
connect-versus-response timeout split and the naming of transport failures
live in one place. Failures come back as `UpstreamError(kind)` with a kind the
outcome classifier understands; httpx's exception zoo stays in here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from chain429.transport import AiohttpTransport


class UpstreamError(Exception):
    """A provider call that produced no (complete) HTTP answer."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind  # one of outcome.TRANSPORT_ERRORS


@contextmanager
def _named_errors() -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        raise UpstreamError("timeout", type(exc).__name__) from exc
    except httpx.ConnectError as exc:
        raise UpstreamError("connect_error", str(exc)) from exc
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise UpstreamError("connection_reset", type(exc).__name__) from exc
    except httpx.HTTPError as exc:
        raise UpstreamError("upstream_error", type(exc).__name__) from exc


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    status: int
    headers: httpx.Headers
    body: bytes


class UpstreamStream:
    """An answer whose body is read as it arrives; always `aclose()` it."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks: AsyncIterator[bytes] = response.aiter_raw()
        self.status = response.status_code
        self.headers = response.headers

    async def next_chunk(self) -> bytes:
        """The next bytes of the body; b"" once it has ended cleanly."""
        with _named_errors():
            try:
                return await anext(self._chunks)
            except StopAsyncIteration:
                return b""

    async def read_body(self, limit: int = 65536) -> bytes:
        """Up to `limit` bytes of an answer that is not a stream (an error body, say)."""
        body = b""
        while len(body) < limit:
            chunk = await self.next_chunk()
            if not chunk:
                break
            body += chunk
        return body[:limit]

    async def aclose(self) -> None:
        # Close the iterator ourselves: left to the garbage collector, an
        # abandoned async generator is finalized at an arbitrary later time.
        await self._chunks.aclose()  # type: ignore[attr-defined]
        await self._response.aclose()


# Headers of ours that must not be forwarded, or that httpx sets itself.
_HOP_BY_HOP = frozenset({"host", "content-length", "connection", "transfer-encoding"})


class Upstream:
    def __init__(self, *, connect_timeout_s: float = 5.0, max_connections: int = 512) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._client = httpx.AsyncClient(
            transport=AiohttpTransport(max_connections=max_connections, keepalive_expiry=60.0),
            # Per-call timeouts are set by each call; this is only a backstop.
            timeout=httpx.Timeout(30.0, connect=connect_timeout_s),
            follow_redirects=False,
            trust_env=False,
        )

    async def post(
        self, url: str, headers: dict[str, str], content: bytes, *, timeout_s: float
    ) -> UpstreamReply:
        """POST and read the whole answer within `timeout_s` (connecting has its own limit)."""
        timeout = httpx.Timeout(timeout_s, connect=min(self._connect_timeout_s, timeout_s))
        try:
            with _named_errors():
                # httpx times each read separately; the deadline covers the whole answer.
                async with asyncio.timeout(timeout_s + self._connect_timeout_s):
                    response = await self._client.post(
                        url, content=content, headers=headers, timeout=timeout
                    )
                    return UpstreamReply(response.status_code, response.headers, response.content)
        except TimeoutError as exc:
            raise UpstreamError("timeout", "no complete answer in time") from exc

    async def open_stream(
        self, url: str, headers: dict[str, str], content: bytes, *, timeout_s: float
    ) -> UpstreamStream:
        """POST and return once the response headers are in (within `timeout_s`).

        Reads of the body have no timeout here: the stream relay owns the
        first-token and idle deadlines, which differ before and after the
        first token.
        """
        timeout = httpx.Timeout(None, connect=min(self._connect_timeout_s, timeout_s))
        request = self._client.build_request(
            "POST", url, content=content, headers=headers, timeout=timeout
        )
        try:
            with _named_errors():
                async with asyncio.timeout(timeout_s + self._connect_timeout_s):
                    response = await self._client.send(request, stream=True)
        except TimeoutError as exc:
            raise UpstreamError("timeout", "no response headers in time") from exc
        return UpstreamStream(response)

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
