"""A client's own limits in both state stores: the memory one, and Redis shared by two instances.

The same scenarios run on a memory store and on two `RedisStateStore`s on one
namespace (two chain429 processes): counts are exact under concurrency, the
day ends at midnight in `settings.timeZone`, token counts are settled at the
real usage, and what a client takes never touches a provider's bucket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from chain429.config.model import Config
from chain429.routing.limits import Block, ClientReservation, Reservation
from chain429.routing.memory_store import MemoryStateStore
from chain429.routing.redis_store import RedisStateStore
from chain429.routing.runtime import build_snapshot
from chain429.upstream.times import next_midnight
from fixtures.redis import REDIS_URL, keys_of

KEY = "a-client-key-0123456789"


def snapshot_with(zone: str = "UTC", **limits: int):
    config = Config.model_validate(
        {
            "settings": {"timeZone": zone},
            "providers": [
                {
                    "id": "p",
                    "type": "generic-openai",
                    "baseUrl": "https://llm.example/v1",
                    "rateLimits": {"requestsPerMinute": 1000},
                }
            ],
            "chains": [{"name": "c", "entries": [{"provider": "p", "model": "m"}]}],
            "clients": [{"name": "ana", "key": KEY, **limits}],
        }
    )
    return build_snapshot(config)


def both_stores(kind: str, namespace: str | None) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
    """Run `scenario(a, b)`: one memory store twice, or two Redis stores on `namespace`."""

    def run(scenario: Callable[..., Awaitable[Any]]) -> Any:
        async def main() -> Any:
            if kind == "memory":
                store = MemoryStateStore()
                return await scenario(store, store)
            a = RedisStateStore(REDIS_URL, namespace=namespace or "")
            b = RedisStateStore(REDIS_URL, namespace=namespace or "")
            await a.start()
            await b.start()
            try:
                assert a.problem is None and b.problem is None
                return await scenario(a, b)
            finally:
                await a.aclose()
                await b.aclose()

        return asyncio.run(main())

    return run


@pytest.fixture(params=["memory", "redis"])
def stores(request: pytest.FixtureRequest) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
    namespace = request.getfixturevalue("redis_ns") if request.param == "redis" else None
    return both_stores(request.param, namespace)


def test_exactly_the_minute_limit_is_taken_whoever_asks(stores):
    snapshot = snapshot_with(requestsPerMinute=20)
    ana = snapshot.clients["ana"]

    async def scenario(a, b):
        asks = [s.reserve_client(ana, 5, time.time()) for _ in range(25) for s in (a, b)]
        results = await asyncio.gather(*asks)
        # The client's count is its own: the entry's bucket took nothing.
        entry = snapshot.chains["c"].entries[0]
        return results, await a.bucket_quotas(entry, time.time())

    results, entry_quotas = stores(scenario)
    taken = [r for r in results if isinstance(r, ClientReservation)]
    refused = [r for r in results if isinstance(r, Block)]
    assert len(taken) == 20 and len(refused) == 30
    assert {r.detail for r in refused} == {"requestsPerMinute 20 reached"}
    assert all(time.time() + 55 < r.until <= time.time() + 60.5 for r in refused)
    assert [q["remaining"] for q in entry_quotas] == [1000]


def test_the_day_ends_at_midnight_in_the_servers_time_zone(stores):
    zone = "Pacific/Kiritimati"  # UTC+14: its midnight is nowhere near UTC's
    ana = snapshot_with(zone, requestsPerDay=2).clients["ana"]

    async def scenario(a, b):
        for store in (a, b):
            assert isinstance(await store.reserve_client(ana, 0, time.time()), ClientReservation)
        return await b.reserve_client(ana, 0, time.time()), await a.client_quotas(ana, time.time())

    refused, quotas = stores(scenario)
    midnight = next_midnight(time.time(), ZoneInfo(zone))
    assert isinstance(refused, Block) and refused.detail == "requestsPerDay 2 reached"
    assert abs(refused.until - midnight) < 1.0
    assert quotas == [
        {
            "kind": "requests",
            "window": "day",
            "limit": 2,
            "remaining": 0,
            "reset_at": pytest.approx(midnight, abs=1.0),
            "source": "manual",
        }
    ]


def test_tokens_are_settled_at_the_real_usage(stores):
    ana = snapshot_with(tokensPerMinute=100, tokensPerDay=1000).clients["ana"]

    async def scenario(a, b):
        first = await a.reserve_client(ana, 60, time.time())
        too_many = await b.reserve_client(ana, 60, time.time())
        await a.finish_client(first, 10)  # the answer cost 10 tokens, not 60
        fits = await b.reserve_client(ana, 60, time.time())
        await b.finish_client(fits, 0)  # no provider answered: nothing used
        return too_many, fits, await a.client_quotas(ana, time.time())

    too_many, fits, quotas = stores(scenario)
    assert isinstance(too_many, Block) and too_many.reason == "tokens"
    assert too_many.detail == "tokensPerMinute 100: 60 used, request needs about 60"
    assert isinstance(fits, ClientReservation)
    left = {(q["kind"], q["window"]): q["remaining"] for q in quotas}
    assert left == {("tokens", "minute"): 90, ("tokens", "day"): 990}


def test_a_client_without_limits_counts_nothing(stores):
    ana = snapshot_with().clients["ana"]

    async def scenario(a, b):
        taken = [await a.reserve_client(ana, 10, time.time()) for _ in range(5)]
        for reservation in taken:
            await b.finish_client(reservation, 3)
        return taken, await a.client_quotas(ana, time.time())

    taken, quotas = stores(scenario)
    assert all(isinstance(r, ClientReservation) and r.done for r in taken)
    assert quotas == []


def test_a_restart_of_the_memory_store_keeps_the_days_count():
    ana = snapshot_with(requestsPerDay=3, requestsPerMinute=10).clients["ana"]

    async def scenario():
        before = MemoryStateStore()
        for _ in range(2):
            await before.reserve_client(ana, 0, time.time())
        saved = before.export_state(time.time())
        after = MemoryStateStore()
        assert after.import_state(saved, time.time()) == 1
        third = await after.reserve_client(ana, 0, time.time())
        return saved, third, await after.reserve_client(ana, 0, time.time())

    saved, third, fourth = asyncio.run(scenario())
    assert list(saved) == ["client:ana"]
    assert isinstance(third, ClientReservation)
    assert isinstance(fourth, Block) and fourth.detail == "requestsPerDay 3 reached"


def test_client_keys_are_namespaced_and_expire(redis_ns):
    snapshot = snapshot_with(requestsPerMinute=5, tokensPerMinute=1000, requestsPerDay=9)
    ana = snapshot.clients["ana"]

    async def scenario(a, b):
        reservation = await a.reserve_client(ana, 5, time.time())
        await a.finish_client(reservation, 3)
        entry = snapshot.chains["c"].entries[0]
        untouched = await a.reserve(entry, 0, time.time())
        assert isinstance(untouched, Reservation)
        await a.finish(untouched, None)

    both_stores("redis", redis_ns)(scenario)
    import redis

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    keys = keys_of(redis_ns)
    mine = [k for k in keys if k.split(":", 1)[1].startswith(("cl:", "clrpm:", "cltpm:"))]
    assert len(mine) == 3, keys
    for key in keys:
        assert key.startswith("{" + redis_ns + "}:")
        assert 0 < client.ttl(key) <= 2 * 86400 + 700, key
    client.close()
