"""The Redis state store against the real Redis: two stores play two instances.

Each test builds two `RedisStateStore`s on one namespace of its own, as two
chain429 processes sharing a Redis would, and checks that what one learns or
takes the other sees: exact counts under concurrency, cooldowns, escalation,
probes, leases, the provider's day, token quotas, header readings, wake-ups.
Times are real (the store reads Redis's clock, not the caller's).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from chain429.config.model import Config
from chain429.routing.limits import Block, Reservation
from chain429.routing.outcome import CooldownPolicy, Kind, Outcome, classify
from chain429.routing.redis_link import DEFER_S
from chain429.routing.redis_store import RedisStateStore
from chain429.routing.runtime import EntryRuntime, build_snapshot
from chain429.upstream.dialects import next_day_boundary
from fixtures.redis import REDIS_URL, keys_of

POLICY = CooldownPolicy()
NO_HEADERS = httpx.Headers({})
OK = Outcome(Kind.SUCCESS, "200", 200)
# Groq's unsuffixed request headers are its daily quota.
DAILY_LEFT = httpx.Headers(
    {"x-ratelimit-remaining-requests": "9", "x-ratelimit-reset-requests": "2h"}
)


def entries(*models: str, provider_type: str = "groq", **limits: int) -> list[EntryRuntime]:
    provider: dict[str, Any] = {"id": "p", "type": provider_type, "apiKey": "k"}
    if provider_type == "generic-openai":
        provider["baseUrl"] = "https://llm.example/v1"
    if limits:
        provider["rateLimits"] = limits
    config = Config.model_validate(
        {
            "providers": [provider],
            "chains": [{"name": "c", "entries": [{"provider": "p", "model": m} for m in models]}],
        }
    )
    return list(build_snapshot(config).chains["c"].entries)


def rate_limited(seconds: float, now: float | None = None) -> Outcome:
    now = time.time() if now is None else now
    return classify(
        429, httpx.Headers({"retry-after": str(seconds)}), b"", None, now=now, policy=POLICY
    )


def two_stores(namespace: str, **options: Any) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
    """Run `scenario(a, b)` with two started stores on `namespace`; both closed after."""

    def run(scenario: Callable[..., Awaitable[Any]]) -> Any:
        async def main() -> Any:
            a = RedisStateStore(REDIS_URL, namespace=namespace, **options)
            b = RedisStateStore(REDIS_URL, namespace=namespace, **options)
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


async def answered(store: RedisStateStore, entry: EntryRuntime, outcome: Outcome, **kw: Any):
    reservation = await store.reserve(entry, 0, time.time())
    assert isinstance(reservation, Reservation), reservation
    block = await store.record(
        reservation, outcome, kw.get("headers", NO_HEADERS), b"", time.time(), POLICY
    )
    await store.finish(reservation, None)
    return block


def test_two_instances_take_exactly_the_minute_limit_between_them(redis_ns):
    (entry,) = entries("m", requestsPerMinute=20)

    async def scenario(a, b):
        asks = [s.reserve(entry, 0, time.time()) for _ in range(50) for s in (a, b)]
        results = await asyncio.gather(*asks)
        taken = [r for r in results if isinstance(r, Reservation)]
        refused = [r for r in results if isinstance(r, Block)]
        return taken, refused

    taken, refused = two_stores(redis_ns)(scenario)
    assert len(taken) == 20 and len(refused) == 80
    assert {r.reason for r in refused} == {"limited"}
    assert all(r.detail == "requestsPerMinute 20 reached" for r in refused)
    # The window slides: the minute ends 60 s after the first request, not on the clock's minute.
    assert all(time.time() + 55 < r.until <= time.time() + 60.5 for r in refused)


def test_a_429_seen_by_one_instance_is_skipped_by_the_other(redis_ns):
    (entry,) = entries("m")

    async def scenario(a, b):
        applied = await answered(a, entry, rate_limited(60))
        seen = await b.reserve(entry, 0, time.time())
        listed = await b.snapshot(time.time())
        return applied, seen, listed

    applied, seen, listed = two_stores(redis_ns)(scenario)
    assert isinstance(seen, Block) and seen.reason == "cooldown" and seen.scope == "bucket"
    assert abs(seen.until - applied.until) < 0.05  # the same cooldown, on both clocks
    assert time.time() + 55 < seen.until <= time.time() + 63  # 60 s, up to 5 % jitter
    assert [item["key"] for item in listed] == ["bucket:p/m"]


def test_a_host_with_a_skewed_clock_sets_the_same_cooldown(redis_ns):
    """The caller's `now` an hour ahead: the cooldown still lasts its 60 s on Redis's clock."""
    (entry,) = entries("m")

    async def scenario(a, b):
        ahead = time.time() + 3600
        reservation = await a.reserve(entry, 0, ahead)
        await a.record(reservation, rate_limited(60, ahead), NO_HEADERS, b"", ahead, POLICY)
        await a.finish(reservation, None)
        return await b.reserve(entry, 0, time.time())

    seen = two_stores(redis_ns)(scenario)
    assert isinstance(seen, Block) and time.time() + 55 < seen.until <= time.time() + 63


def test_escalation_counts_the_429s_of_every_instance(redis_ns):
    (entry,) = entries("m")

    async def scenario(a, b):
        first = await a.reserve(entry, 0, time.time())
        second = await b.reserve(entry, 0, time.time())
        one = await a.record(first, rate_limited(10), NO_HEADERS, b"", time.time(), POLICY)
        two = await b.record(second, rate_limited(10), NO_HEADERS, b"", time.time(), POLICY)
        return one, two

    one, two = two_stores(redis_ns)(scenario)
    assert time.time() + 8 < one.until <= time.time() + 11
    assert time.time() + 18 < two.until <= time.time() + 21.5  # the second strike doubles


def test_one_probe_across_instances_when_a_cooldown_ends(redis_ns):
    (entry,) = entries("m")

    async def scenario(a, b):
        await answered(a, entry, rate_limited(1))
        await asyncio.sleep(1.2)
        probe = await a.reserve(entry, 0, time.time())
        meanwhile = await b.reserve(entry, 0, time.time())
        probing = probe.probe_key
        await a.record(probe, OK, NO_HEADERS, b"", time.time(), POLICY)
        await a.finish(probe, None)
        after = await b.reserve(entry, 0, time.time())
        return probing, meanwhile, after

    probing, meanwhile, after = two_stores(redis_ns)(scenario)
    assert probing == "bucket:p/m"
    assert isinstance(meanwhile, Block) and meanwhile.reason == "probing"
    assert isinstance(after, Reservation) and after.probe_key is None


def test_a_dead_instances_concurrency_slots_come_back_within_the_lease(redis_ns):
    (entry,) = entries("m", concurrentRequests=1)

    async def scenario(a, b):
        held = await a.reserve(entry, 0, time.time())
        assert isinstance(held, Reservation)
        await asyncio.sleep(1.6)  # past the lease: a renews it while its request runs
        while_renewed = await b.reserve(entry, 0, time.time())
        await a.aclose()  # a dies without finishing: nobody renews
        started = time.monotonic()
        while isinstance(await b.reserve(entry, 0, time.time()), Block):
            assert time.monotonic() - started < 3.0, "the slot never came back"
            await asyncio.sleep(0.1)
        return while_renewed, time.monotonic() - started

    while_renewed, waited = two_stores(redis_ns, lease_s=1.0)(scenario)
    assert isinstance(while_renewed, Block) and while_renewed.reason == "concurrency"
    assert while_renewed.detail == "1 requests in flight (concurrentRequests 1)"
    assert waited <= 1.5


def test_finishing_frees_the_slot_for_the_other_instance_and_wakes_it(redis_ns):
    (entry,) = entries("m", concurrentRequests=1)

    async def scenario(a, b):
        woken = asyncio.Event()
        b.set_waker(woken.set)
        await asyncio.sleep(0.2)  # b's subscription is up
        held = await a.reserve(entry, 0, time.time())
        refused = await b.reserve(entry, 0, time.time())
        await a.finish(held, None)
        await asyncio.wait_for(woken.wait(), 3)
        return refused, await b.reserve(entry, 0, time.time()), await b.in_flight(entry)

    refused, after, in_flight = two_stores(redis_ns)(scenario)
    assert isinstance(refused, Block) and refused.reason == "concurrency"
    assert isinstance(after, Reservation) and in_flight == 1


def test_the_day_counts_on_every_instance_and_ends_at_the_providers_midnight(redis_ns):
    # Gemini's day starts at midnight Pacific time, not UTC.
    (entry,) = entries("gemini-2.0-flash", provider_type="google-ai", requestsPerDay=3)

    async def scenario(a, b):
        for store in (a, b, a):
            assert isinstance(await store.reserve(entry, 0, time.time()), Reservation)
        refused = await b.reserve(entry, 0, time.time())
        # A restarted instance (a new store) still knows the day's count.
        again = RedisStateStore(REDIS_URL, namespace=redis_ns)
        await again.start()
        try:
            return refused, await again.reserve(entry, 0, time.time())
        finally:
            await again.aclose()

    refused, after_restart = two_stores(redis_ns)(scenario)
    midnight = next_day_boundary(entry.dialect, time.time())
    for block in (refused, after_restart):
        assert isinstance(block, Block) and block.detail == "requestsPerDay 3 reached"
        assert abs(block.until - midnight) < 1.0


def test_token_quotas_count_real_tokens_on_every_instance(redis_ns):
    (entry,) = entries("m", tokensPerMinute=100)

    async def scenario(a, b):
        first = await a.reserve(entry, 60, time.time())
        too_many = await b.reserve(entry, 60, time.time())
        await a.finish(first, 10)  # the answer cost 10 tokens, not the 60 estimated
        fits = await b.reserve(entry, 60, time.time())
        quotas = await a.bucket_quotas(entry, time.time())
        return too_many, fits, quotas

    too_many, fits, quotas = two_stores(redis_ns)(scenario)
    assert isinstance(too_many, Block) and too_many.reason == "tokens"
    assert too_many.detail == "tokensPerMinute 100: 60 used, request needs about 60"
    assert isinstance(fits, Reservation)
    minute = [q for q in quotas if q["kind"] == "tokens" and q["window"] == "minute"]
    assert minute[0]["remaining"] == 30 and minute[0]["source"] == "manual"


def test_header_readings_are_shared(redis_ns):
    (entry,) = entries("gpt", provider_type="openai")
    headers = httpx.Headers(
        {
            "x-ratelimit-limit-requests": "10",
            "x-ratelimit-remaining-requests": "1",
            "x-ratelimit-reset-requests": "30s",
        }
    )

    async def scenario(a, b):
        await answered(a, entry, OK, headers=headers)
        for _ in range(50):  # a success's readings travel without holding up its request
            quotas = await b.bucket_quotas(entry, time.time())
            if quotas:
                break
            await asyncio.sleep(0.02)
        last = await b.reserve(entry, 0, time.time())
        none_left = await a.reserve(entry, 0, time.time())
        return quotas, last, none_left

    quotas, last, none_left = two_stores(redis_ns)(scenario)
    assert quotas[0]["remaining"] == 1 and quotas[0]["limit"] == 10
    assert quotas[0]["source"] == "header"
    assert isinstance(last, Reservation)
    assert isinstance(none_left, Block) and none_left.reason == "limited"
    assert none_left.detail == "minute request quota used up (10 allowed)"
    assert time.time() + 25 < none_left.until <= time.time() + 31


def test_streams_dying_on_different_instances_add_up(redis_ns):
    (entry,) = entries("m")
    policy = CooldownPolicy(mid_stream_threshold=3, mid_stream_base_s=60)

    async def scenario(a, b):
        blocks = []
        for store in (a, b, a):
            blocks.append(
                await store.record_stream_end(entry, clean=False, now=time.time(), policy=policy)
            )
        return blocks, await b.check(entry, time.time())

    blocks, checked = two_stores(redis_ns)(scenario)
    assert blocks[:2] == [None, None]
    assert (
        blocks[2].reason == "unstable" and blocks[2].detail == "3 streams in a row died mid-answer"
    )
    assert checked is not None and checked.reason == "unstable"


def test_clearing_on_one_instance_ends_the_cooldown_for_all(redis_ns):
    one, two = entries("one", "two")

    async def scenario(a, b):
        await answered(a, one, rate_limited(600))
        await answered(a, two, rate_limited(600))
        cleared = await b.clear("p", [], time.time())
        return cleared, await a.reserve(one, 0, time.time()), await a.snapshot(time.time())

    cleared, after, listed = two_stores(redis_ns)(scenario)
    assert cleared == 2 and isinstance(after, Reservation) and after.probe_key is None
    assert listed == []


def test_forgetting_a_provider_drops_its_keys(redis_ns):
    (entry,) = entries("m", requestsPerMinute=5)

    async def scenario(a, b):
        await answered(a, entry, rate_limited(600), headers=DAILY_LEFT)
        before = keys_of(redis_ns)
        await b.forget_provider("p")
        left = keys_of(redis_ns)
        return before, left, await a.reserve(entry, 0, time.time())

    before, left, after = two_stores(redis_ns)(scenario)
    bucket_keys = {f"{{{redis_ns}}}:{kind}:p/m" for kind in ("b", "rpm", "rd")}
    assert bucket_keys <= set(before)
    assert not bucket_keys & set(left)
    assert isinstance(after, Reservation) and after.probe_key is None


def test_every_key_is_namespaced_and_expires(redis_ns):
    (entry,) = entries("m", requestsPerMinute=5, tokensPerMinute=1000, concurrentRequests=3)

    async def scenario(a, b):
        await answered(a, entry, rate_limited(30))
        reservation = await a.reserve(entries("m2")[0], 5, time.time())
        await a.finish(reservation, 3)
        # A chain test's success with quota headers, on a bucket nothing reserved in.
        learned = Reservation(0, entries("m3")[0], 0, time.time(), done=True)
        await a.record(learned, OK, DAILY_LEFT, b"", time.time(), POLICY)

    two_stores(redis_ns)(scenario)
    import redis

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    keys = keys_of(redis_ns)
    assert len(keys) >= 5
    for key in keys:
        assert key.startswith("{" + redis_ns + "}:")
        assert 0 < client.ttl(key) <= 2 * 86400 + 700, key
    client.close()


@pytest.mark.parametrize("failure", ["open", "closed"])
def test_an_unreachable_redis_serves_on_local_limits_or_refuses(failure, caplog):
    from chain429.routing.limits import StateStoreUnavailable

    (entry,) = entries("m", requestsPerMinute=1)

    async def scenario():
        # Nothing listens on port 1: every connection is refused at once.
        url = "redis://:s3cret-pass@127.0.0.1:1/0"
        store = RedisStateStore(url, failure=failure, timeout_s=0.2)
        await store.start()
        try:
            problem = store.problem
            try:
                first = await store.reserve(entry, 0, time.time())
                second = await store.reserve(entry, 0, time.time())
            except StateStoreUnavailable as exc:
                return problem, exc
            return problem, (first, second)
        finally:
            await store.aclose()

    problem, result = asyncio.run(scenario())
    assert problem == "Redis unreachable (ConnectionError)"
    assert "redis://127.0.0.1:1/0" in caplog.text and "s3cret" not in caplog.text
    if failure == "closed":
        assert isinstance(result, StateStoreUnavailable)
    else:  # this instance's own limits hold meanwhile
        first, second = result
        assert isinstance(first, Reservation) and isinstance(second, Block)


def test_what_a_chain_test_learns_is_shared(redis_ns):
    """Chain tests ask entries without a reservation (routing/probe.py); a 429 still counts."""
    (entry,) = entries("m")

    async def scenario(a, b):
        learned = Reservation(0, entry, 0, time.time(), done=True)
        await a.record(learned, rate_limited(60), NO_HEADERS, b"", time.time(), POLICY)
        return await b.check(entry, time.time())

    seen = two_stores(redis_ns)(scenario)
    assert seen is not None and seen.reason == "cooldown"


def transient() -> Outcome:
    return Outcome(Kind.TRANSIENT, "503", 503, reason="upstream answered 503")


def test_transient_failures_on_every_instance_open_one_breaker_with_one_probe(redis_ns):
    (entry,) = entries("m")
    policy = CooldownPolicy(breaker_failures=3, breaker_base_s=1.0, breaker_max_s=10.0)

    async def scenario(a, b):
        applied = []
        for store in (a, b, a):
            reservation = await store.reserve(entry, 0, time.time())
            applied.append(
                await store.record(reservation, transient(), NO_HEADERS, b"", time.time(), policy)
            )
            await store.finish(reservation, None)
        skipped = await b.reserve(entry, 0, time.time())
        opened = await b.breaker(entry, time.time())
        await asyncio.sleep(1.2)  # its interval is over: half-open
        probe = await b.reserve(entry, 0, time.time())
        meanwhile = await a.reserve(entry, 0, time.time())
        half_open = await a.breaker(entry, time.time())
        await b.record(probe, OK, NO_HEADERS, b"", time.time(), policy)
        await b.finish(probe, None)
        return applied, skipped, opened, meanwhile, half_open, await a.breaker(entry, time.time())

    applied, skipped, opened, meanwhile, half_open, closed = two_stores(redis_ns)(scenario)
    assert applied[:2] == [None, None]
    assert applied[2].reason == "breaker"
    assert applied[2].detail == "3 transient failures in a row (last: 503)"
    assert isinstance(skipped, Block) and skipped.reason == "breaker"
    assert opened["state"] == "open" and opened["failures"] == 3
    assert time.time() < opened["until"] + 1.3
    assert isinstance(meanwhile, Block) and meanwhile.reason == "breaker"
    assert meanwhile.detail.startswith("half-open")
    assert half_open["state"] == "half_open"
    assert closed == {"state": "closed", "failures": 0, "until": None, "reason": None}


def test_a_success_on_one_instance_resets_the_count_for_all(redis_ns):
    (entry,) = entries("m")
    policy = CooldownPolicy(breaker_failures=2, breaker_base_s=30.0)

    async def scenario(a, b):
        first = await a.reserve(entry, 0, time.time())
        await a.record(first, transient(), NO_HEADERS, b"", time.time(), policy)
        await a.finish(first, None)
        ok = await b.reserve(entry, 0, time.time())
        await b.record(ok, OK, NO_HEADERS, b"", time.time(), policy)
        await b.finish(ok, None)
        await asyncio.sleep(DEFER_S + 0.1)  # a plain success's finish rides late
        second = await a.reserve(entry, 0, time.time())
        applied = await a.record(second, transient(), NO_HEADERS, b"", time.time(), policy)
        return applied, await b.breaker(entry, time.time())

    applied, state = two_stores(redis_ns)(scenario)
    assert applied is None  # one failure since the success: below the threshold
    assert state["state"] == "closed" and state["failures"] == 1
