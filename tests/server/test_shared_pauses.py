"""Pauses on the shared state store: made on one instance, in force on every one, kept in
Redis beyond any process, and never half-made while Redis is away."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from fixtures.redis import REDIS_URL, keys_of
from fixtures.servers import chain_config, provider_entry
from fixtures.tcp_proxy import TcpProxy

ADMIN_KEY = "shared-pause-admin"
HELLO = [{"role": "user", "content": "hi"}]


def config(a, b, state_store: str, namespace: str) -> dict[str, Any]:
    return chain_config(
        [provider_entry("a", a), provider_entry("b", b)],
        [("a", "m-a"), ("b", "m-b")],
        settings={
            "adminKeys": [ADMIN_KEY],
            "stateStore": state_store,
            "stateNamespace": namespace,
            "metricsPublic": True,
        },
    )


def steer(p, route: str, **body: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    return httpx.post(f"{p.url}/v1/admin/entries/{route}", json=body, headers=headers, timeout=5)


def trace(p) -> str:
    reply = p.openai().chat.completions.with_raw_response.create(model="main", messages=HELLO)
    return reply.headers["x-429chain-trace"]


def test_a_pause_made_on_one_instance_holds_on_every_one_and_outlives_them(fake, proxy, redis_ns):
    a, b = fake("a"), fake("b")
    settings = config(a, b, REDIS_URL, redis_ns)
    one, two = proxy(settings), proxy(settings)
    paused = steer(one, "pause", provider="a", model="m-a")
    assert paused.status_code == 200, paused.text
    assert trace(two) == "a/m-a=skip:paused,b/m-b=200"
    with two.http() as http:
        report = http.get("/v1/ratelimits").json()
    assert report["paused"] == [paused.json()["paused"]]
    assert report["entries"][0]["state"] == "paused"
    assert any(key.endswith("}:paused") for key in keys_of(redis_ns))

    # A new instance (a restart, say) finds it in Redis.
    three = proxy(settings)
    assert trace(three) == "a/m-a=skip:paused,b/m-b=200"

    # Resumed on another instance: every instance asks the entry again.
    assert steer(two, "resume", provider="a").json() == {"resumed": 1, "provider_paused": False}
    assert trace(one) == "a/m-a=200"
    assert trace(three) == "a/m-a=200"
    assert a.requests and all(r.json()["model"] == "m-a" for r in a.requests)


def test_with_redis_away_a_pause_is_refused_and_the_known_ones_still_hold(fake, proxy, redis_ns):
    a, b = fake("a"), fake("b")
    parts = urlsplit(REDIS_URL)
    with TcpProxy((parts.hostname or "127.0.0.1", parts.port or 6379)) as tcp:
        url = f"redis://127.0.0.1:{tcp.port}{parts.path or '/0'}?socket_timeout=0.3"
        p = proxy(config(a, b, url, redis_ns))  # stateStoreFailure: open (the default)
        assert steer(p, "pause", provider="a").status_code == 200

        tcp.stall()
        refused = steer(p, "pause", provider="b")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "state_store_unavailable"
        assert "every instance" in refused.json()["error"]["message"]
        assert steer(p, "resume", provider="a").status_code == 503
        # Serving on its own limits meanwhile, this instance still skips what was paused.
        assert trace(p) == "a/m-a=skip:paused,b/m-b=200"

        tcp.restore()
        deadline = time.monotonic() + 10
        while httpx.get(f"{p.url}/health", timeout=5).json()["status"] != "ok":
            assert time.monotonic() < deadline, "Redis never came back"
            time.sleep(0.05)
        assert steer(p, "resume", provider="a").json()["resumed"] == 1
        assert trace(p) == "a/m-a=200"
