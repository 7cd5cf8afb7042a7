"""Talking to providers: one pooled HTTP client, timeouts, and nothing else.

Every provider call goes through `Upstream`, so connection reuse, the
connect-versus-response timeout split and the naming of transport failures
live in one place. Failures come back as `UpstreamError(kind)` with a kind the
outcome classifier understands; httpx's exception zoo stays in here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from chain429.transport import AiohttpTransport


class UpstreamError(Exception):
    """A provider call that produced no HTTP answer."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind  # one of outcome.TRANSPORT_ERRORS


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    status: int
    headers: httpx.Headers
    body: bytes


# Headers of ours that must not be forwarded, or that httpx sets itself.
_HOP_BY_HOP = frozenset({"host", "content-length", "connection", "transfer-encoding"})


class Upstream:
    def __init__(self, *, connect_timeout_s: float = 5.0, max_connections: int = 512) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._client = httpx.AsyncClient(
            transport=AiohttpTransport(max_connections=max_connections, keepalive_expiry=60.0),
            # Per-call timeouts are set in post(); this is only a backstop.
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
            # httpx times each read separately; the deadline covers the whole answer.
            async with asyncio.timeout(timeout_s + self._connect_timeout_s):
                response = await self._client.post(
                    url, content=content, headers=headers, timeout=timeout
                )
                return UpstreamReply(response.status_code, response.headers, response.content)
        except TimeoutError as exc:
            raise UpstreamError("timeout", "no complete answer in time") from exc
        except httpx.TimeoutException as exc:
            raise UpstreamError("timeout", type(exc).__name__) from exc
        except httpx.ConnectError as exc:
            raise UpstreamError("connect_error", str(exc)) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise UpstreamError("connection_reset", type(exc).__name__) from exc
        except httpx.HTTPError as exc:
            raise UpstreamError("upstream_error", type(exc).__name__) from exc

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
