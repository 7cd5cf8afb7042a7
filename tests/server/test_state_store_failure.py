"""When the shared state store's Redis stops answering, and when it comes back.

chain429 talks to the real Redis through a TCP proxy the test controls
(tests/fixtures/tcp_proxy.py): `stall()` keeps the connections open and
swallows every byte, which is what a hung Redis or a dropped network path
looks like (a refused connection would fail fast and prove less).
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from fixtures.redis import REDIS_URL, keys_of
from fixtures.servers import chain_config, provider_entry
from fixtures.tcp_proxy import TcpProxy

TIMEOUT_S = 0.3  # the Redis call timeout the test sets in the URL


def redis_target() -> tuple[str, int]:
    parts = urlsplit(REDIS_URL)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def start(fake, proxy, tcp: TcpProxy, namespace: str, failure: str) -> tuple[Any, Any, Any]:
    limited, spare = fake("limited"), fake("spare")
    db = urlsplit(REDIS_URL).path or "/0"
    config = chain_config(
        [
            provider_entry("limited", limited, rateLimits={"requestsPerMinute": 1}),
            provider_entry("spare", spare),
        ],
        [("limited", "m"), ("spare", "m")],
        settings={
            "stateStore": f"redis://127.0.0.1:{tcp.port}{db}?socket_timeout={TIMEOUT_S}",
            "stateNamespace": namespace,
            "stateStoreFailure": failure,
            "metricsPublic": True,
        },
    )
    return proxy(config), limited, spare


def health(p) -> dict[str, Any]:
    return httpx.get(f"{p.url}/health", timeout=5).json()


def wait_for(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_open_serves_on_local_limits_says_degraded_and_shares_again_when_back(
    fake, proxy, redis_ns, caplog
):
    caplog.set_level(logging.INFO, logger="chain429.routing.redis")
    with TcpProxy(redis_target()) as tcp:
        p, limited, spare = start(fake, proxy, tcp, redis_ns, "open")
        client = p.openai()
        client.chat.completions.create(model="main", messages=[{"role": "user", "content": "1"}])
        assert health(p)["status"] == "ok"
        assert health(p)["state_store"] == {
            "kind": "redis",
            "status": "ok",
            "reason": None,
            "failure_mode": "open",
        }
        assert len(limited.requests) == 1
        # The minute's count is in Redis, not in the process.
        assert any(key.endswith(":rpm:limited/m") for key in keys_of(redis_ns))

        tcp.stall()
        started = time.monotonic()
        answers = [
            client.chat.completions.with_raw_response.create(
                model="main", messages=[{"role": "user", "content": str(n)}]
            )
            for n in range(6)
        ]
        elapsed = time.monotonic() - started
        # Served throughout: the first request waits for one timeout, the breaker spares the rest.
        assert [a.http_response.status_code for a in answers] == [200] * 6
        assert elapsed < TIMEOUT_S + 1.0, elapsed  # six timeouts would take 1.8 s
        # This instance's own limits hold meanwhile: one per minute on `limited`.
        assert [a.headers["X-429chain-Provider"] for a in answers] == [
            "limited/m",
            *["spare/m"] * 5,
        ]
        # One warning for the outage, not one per request; the URL shown without secrets.
        warned = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(warned) == 1, warned
        assert f"redis://127.0.0.1:{tcp.port}" in warned[0]
        state = health(p)
        assert state["status"] == "degraded"
        assert state["state_store"]["status"] == "unavailable"
        assert state["state_store"]["reason"] == "Redis unreachable (TimeoutError)"
        metrics = httpx.get(f"{p.url}/metrics", timeout=5).text
        assert "chain429_state_store_unavailable 1.0" in metrics

        tcp.restore()
        wait_for(lambda: health(p)["status"] == "ok")
        assert "chain429_state_store_unavailable 0.0" in httpx.get(f"{p.url}/metrics").text
        assert any("Redis is back" in r.getMessage() for r in caplog.records)
        # Shared again: Redis still holds the minute's request from before the outage.
        after = client.chat.completions.with_raw_response.create(
            model="main", messages=[{"role": "user", "content": "after"}]
        )
        assert after.headers["X-429chain-Provider"] == "spare/m"
        assert "limited/m" in after.headers["X-429chain-Trace"]


def test_closed_refuses_with_503_until_redis_is_back(fake, proxy, redis_ns):
    with TcpProxy(redis_target()) as tcp:
        p, limited, spare = start(fake, proxy, tcp, redis_ns, "closed")
        client = p.openai()
        client.chat.completions.create(model="main", messages=[{"role": "user", "content": "1"}])

        tcp.stall()
        refused = []
        started = time.monotonic()
        for _ in range(4):
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(
                    model="main", messages=[{"role": "user", "content": "x"}]
                )
            refused.append(caught.value)
        assert time.monotonic() - started < TIMEOUT_S + 1.0
        assert {e.status_code for e in refused} == {503}
        assert {e.code for e in refused} == {"state_store_unavailable"}
        assert "unreachable" in refused[0].message
        assert len(limited.requests) + len(spare.requests) == 1  # nobody was asked
        assert health(p)["state_store"]["status"] == "unavailable"
        metrics = httpx.get(f"{p.url}/metrics", timeout=5)  # the operator still sees why
        assert metrics.status_code == 200
        assert "chain429_state_store_unavailable 1.0" in metrics.text

        tcp.restore()
        wait_for(lambda: health(p)["status"] == "ok")
        reply = client.chat.completions.with_raw_response.create(
            model="main", messages=[{"role": "user", "content": "2"}]
        )
        assert reply.http_response.status_code == 200
