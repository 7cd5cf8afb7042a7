"""An httpx transport on aiohttp's connection pool.

Why: under concurrency, httpcore's pool (httpx's default transport) rescans
every pooled connection and probes each socket on every request, and hands one
idle connection to several waiters that then retry. Measured in bench/ on one
core at 32 concurrent requests, chain429 spent 85% of its time there and
served about 500 requests/s; on aiohttp's pool it serves several times that.
httpx stays the API the rest of chain429 codes against; only the bytes on the
wire move to aiohttp.

aiohttp's exceptions are mapped onto httpx's precisely (connect vs read
timeout, refused vs reset), because the outcome classifier depends on them.

Bodies stay encoded (aiohttp's `auto_decompress=False`; `UpstreamStream`
inflates them within its limit). The two headers it needs to do so,
Content-Encoding and Content-Length, are handed on as response extensions
read from aiohttp's parsed headers: a C lookup there, where each
`httpx.Headers.get` is a Python scan of every header.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterable

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from chain429.upstream.addresses import forbidden_upstream, is_listed


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            # iter_any: hand bytes on as soon as they arrive (streams must not buffer).
            async for chunk in self._response.content.iter_any():
                yield chunk
        except Exception as exc:
            raise _map_error(exc) from exc

    async def aclose(self) -> None:
        # release() keeps a fully read connection for reuse; close() drops one
        # whose body was abandoned half way, which could not be reused safely.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


def _map_error(exc: BaseException) -> httpx.TransportError:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.SocketTimeoutError | aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(message)  # malformed status line or headers
    if isinstance(exc, aiohttp.ClientOSError | ConnectionError):
        return httpx.ReadError(message)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message)
    return httpx.TransportError(message)


class GuardedResolver(AbstractResolver):
    """DNS answers without link-local or cloud-metadata addresses (chain429.upstream.addresses).

    The config refuses such addresses written in a `baseUrl`; a name that
    resolves to one (`169.254.169.254.nip.io`, or a DNS record changed later)
    is refused here, when connecting, unless `allowed()` (the running
    `settings.allowPrivateUpstreams`) lists the name or the address.
    """

    def __init__(
        self, allowed: Callable[[], Iterable[str]], inner: AbstractResolver | None = None
    ) -> None:
        self._allowed = allowed
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:  # made on the running loop, as aiohttp's own are
            self._inner = DefaultResolver()
        found = await self._inner.resolve(host, port, family)
        allowed = tuple(self._allowed())
        if is_listed(host, allowed):
            return found  # the owner named this host as a private upstream
        kept = [info for info in found if forbidden_upstream(info["host"], allowed) is None]
        if not kept:
            addresses = ", ".join(sorted({info["host"] for info in found}))
            raise OSError(
                f"{host} resolves to {addresses}: a link-local / cloud metadata address "
                "(list it in settings.allowPrivateUpstreams if a provider really lives there)"
            )
        return kept

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive pool; one per Upstream, created lazily on the running loop."""

    def __init__(
        self,
        *,
        max_connections: int = 512,
        keepalive_expiry: float = 60.0,
        allowed_private: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._allowed_private = allowed_private
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_expiry,
                ttl_dns_cache=300,
                ssl=ssl.create_default_context(),
                resolver=GuardedResolver(self._allowed_private),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,  # UpstreamStream inflates, within a limit
                # A proxy must not carry one client's cookies into another's request.
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        try:
            response = await self._get_session().request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=request.content or None,
                allow_redirects=False,
                timeout=timeout,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise _map_error(exc) from exc
        headers = response.headers
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response),
            extensions={
                "http_version": b"HTTP/1.1",
                "content_encoding": headers.get("Content-Encoding"),
                "content_length": headers.get("Content-Length"),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
