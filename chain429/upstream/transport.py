"""aiohttp's connection pool, as chain429 configures it, and the resolver it connects through.

Why aiohttp: under concurrency, httpcore's pool (httpx's default transport)
rescans every pooled connection and probes each socket on every request.
Measured in bench/ on one core at 32 concurrent requests, chain429 spent 85% of
its time there. Proxied calls used to go through httpx's API on top of this
pool; that layer (URL parsing, `Headers` objects, cookies) then cost as much as
the pool itself, so `chain429.upstream.client` now uses aiohttp's client
directly. httpx stays where its API serves: the CLI's admin client and tests.

Bodies stay encoded (`auto_decompress=False`; `UpstreamStream` inflates them
within its limit). There is no cookie jar, and no User-Agent is added.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterable

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from chain429.upstream.addresses import forbidden_upstream, is_listed


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


def new_session(
    *,
    max_connections: int = 512,
    keepalive_expiry: float = 60.0,
    allowed_private: Callable[[], Iterable[str]] = tuple,
) -> aiohttp.ClientSession:
    """The HTTP/1.1 keep-alive pool of every provider call; make it on the running loop."""
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=0,
        keepalive_timeout=keepalive_expiry,
        ttl_dns_cache=300,
        ssl=ssl.create_default_context(),
        resolver=GuardedResolver(allowed_private),
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,  # UpstreamStream inflates, within a limit
        # A proxy must not carry one client's cookies into another's request.
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
        timeout=aiohttp.ClientTimeout(total=None),
    )
