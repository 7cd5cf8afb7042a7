"""The memory state store: scopes, buckets, probes, escalation, configured limits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest

from chain429.config.model import Config
from chain429.routing.limits import Block, Reservation
from chain429.routing.memory_store import MemoryStateStore
from chain429.routing.outcome import CooldownPolicy, Kind, Outcome, Scope, classify
from chain429.routing.runtime import EntryRuntime, build_snapshot

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC).timestamp()
POLICY = CooldownPolicy()
NO_HEADERS = httpx.Headers({})


def entries(*specs, provider_type="groq", rate_limits=None) -> list[EntryRuntime]:
    """One provider `p` with an entry per model name."""
    provider = {"id": "p", "type": provider_type, "apiKey": "k"}
    if rate_limits:
        provider["rateLimits"] = rate_limits
    config = Config.model_validate(
        {
            "providers": [provider],
            "chains": [{"name": "c", "entries": [{"provider": "p", "model": m} for m in specs]}],
        }
    )
    return list(build_snapshot(config).chains["c"].entries)


def run(coro):
    return asyncio.run(coro)


def rate_limited(now, seconds=60.0):
    return classify(
        429, httpx.Headers({"retry-after": str(seconds)}), b"", None, now=now, policy=POLICY
    )


async def ask(store, entry, now, need=0):
    return await store.reserve(entry, need, now)


async def answered(store, entry, outcome, now, headers=NO_HEADERS, body=b""):
    reservation = await store.reserve(entry, 0, now)
    assert isinstance(reservation, Reservation), reservation
    block = await store.record(reservation, outcome, headers, body, now, POLICY)
    await store.finish(reservation, None)
    return block


OK = Outcome(Kind.SUCCESS, "200", 200)


def test_a_new_cooldown_never_shortens_a_longer_one():
    (entry,) = entries("m")

    async def scenario():
        store = MemoryStateStore()
        first = await answered(store, entry, rate_limited(NOW, 300), NOW)
        # A second answer in flight at the same time says 10 s: the 300 s stand.
        reservation = Reservation(99, entry, 0, NOW)
        second = await store.record(
            reservation, rate_limited(NOW, 10), NO_HEADERS, b"", NOW, POLICY
        )
        return first, second

    first, second = run(scenario())
    assert second.until == first.until >= NOW + 300


def test_402_blocks_the_provider_404_only_its_entry():
    one, two = entries("one", "two")
    payment = Outcome(Kind.QUOTA_EXHAUSTED, "402", 402, NOW + 60, Scope.PROVIDER)
    unknown = Outcome(Kind.UNHEALTHY, "404", 404, NOW + 60, Scope.ENTRY)

    async def scenario():
        store = MemoryStateStore()
        await answered(store, one, unknown, NOW)
        after_404 = await ask(store, two, NOW)
        await store.finish(after_404, None)
        await answered(store, two, payment, NOW)
        return after_404, await ask(store, two, NOW)

    after_404, after_402 = run(scenario())
    assert isinstance(after_404, Reservation)
    assert isinstance(after_402, Block) and after_402.scope == "provider"


def test_openrouter_free_models_share_one_bucket():
    free_a, free_b, paid = entries("a:free", "b:free", "c", provider_type="openrouter")
    assert free_a.bucket == free_b.bucket != paid.bucket

    async def scenario():
        store = MemoryStateStore()
        await answered(store, free_a, rate_limited(NOW), NOW)
        return await ask(store, free_b, NOW), await ask(store, paid, NOW)

    on_free_b, on_paid = run(scenario())
    assert isinstance(on_free_b, Block) and on_free_b.reason == "cooldown"
    assert isinstance(on_paid, Reservation)


def test_when_a_cooldown_ends_one_request_probes_first():
    (entry,) = entries("m")

    async def scenario():
        store = MemoryStateStore()
        block = await answered(store, entry, rate_limited(NOW, 5), NOW)
        later = block.until + 0.01
        probe = await ask(store, entry, later)
        probing = probe.probe_key
        meanwhile = await ask(store, entry, later)
        await store.record(probe, OK, NO_HEADERS, b"", later, POLICY)
        await store.finish(probe, 10)
        return probing, meanwhile, await ask(store, entry, later)

    probing, meanwhile, after = run(scenario())
    assert probing == "bucket:p/m"
    assert isinstance(meanwhile, Block) and meanwhile.reason == "probing"
    assert isinstance(after, Reservation)


def test_repeated_429s_on_a_bucket_escalate():
    (entry,) = entries("m")

    async def scenario():
        store = MemoryStateStore()
        now, rests = NOW, []
        for _ in range(3):
            block = await answered(store, entry, rate_limited(now, 60), now)
            rests.append(block.until - now)
            now = block.until + 0.01  # the probe comes back with another 429
        return rests

    first, second, third = run(scenario())
    assert 60 <= first <= 63
    assert 120 <= second <= 126
    assert 240 <= third <= 252


def test_a_429_for_a_used_up_daily_quota_rests_until_the_next_day():
    (entry,) = entries("m")
    headers = httpx.Headers(
        {
            "x-ratelimit-limit-requests": "14400",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "2h",
        }
    )
    outcome = classify(429, headers, b"", None, now=NOW, policy=POLICY)

    block = run(answered(MemoryStateStore(), entry, outcome, NOW, headers))
    assert block.until >= NOW + 2 * 3600  # groq's -requests family is its daily quota


def test_header_reading_of_one_left_admits_exactly_one_more_request():
    (entry,) = entries("m")
    headers = httpx.Headers(
        {
            "x-ratelimit-limit-tokens": "6000",
            "x-ratelimit-remaining-tokens": "5000",
            "x-ratelimit-reset-tokens": "10s",
            "x-ratelimit-limit-requests": "1000",
            "x-ratelimit-remaining-requests": "1",
            "x-ratelimit-reset-requests": "1m",
        }
    )

    async def scenario():
        store = MemoryStateStore()
        await answered(store, entry, OK, NOW, headers)
        first = await ask(store, entry, NOW + 1)
        second = await ask(store, entry, NOW + 1)
        greedy = await ask(store, entry, NOW + 1, need=9000)
        return first, second, greedy

    first, second, greedy = run(scenario())
    assert isinstance(first, Reservation)
    assert isinstance(second, Block) and second.reason == "limited" and second.source == "header"
    assert isinstance(greedy, Block)


def test_tokens_below_the_estimate_skip_the_entry():
    (entry,) = entries("m")
    headers = httpx.Headers(
        {"x-ratelimit-remaining-tokens": "500", "x-ratelimit-reset-tokens": "30s"}
    )

    async def scenario():
        store = MemoryStateStore()
        await answered(store, entry, OK, NOW, headers)
        return await ask(store, entry, NOW, need=400), await ask(store, entry, NOW, need=800)

    fits, too_big = run(scenario())
    assert isinstance(fits, Reservation)
    assert isinstance(too_big, Block) and too_big.reason == "tokens"


def test_requests_per_minute_is_a_sliding_window():
    (entry,) = entries("m", rate_limits={"requestsPerMinute": 3})

    async def scenario():
        store = MemoryStateStore()
        taken = [await ask(store, entry, NOW + i) for i in range(3)]
        refused = await ask(store, entry, NOW + 30)
        still_refused = await ask(store, entry, NOW + 59.9)
        slid = await ask(store, entry, NOW + 60.01)  # the first one left the window
        return taken, refused, still_refused, slid

    taken, refused, still_refused, slid = run(scenario())
    assert all(isinstance(t, Reservation) for t in taken)
    assert isinstance(refused, Block) and refused.until == pytest.approx(NOW + 60)
    assert isinstance(still_refused, Block)
    assert isinstance(slid, Reservation)


def test_tokens_per_minute_counts_real_usage():
    (entry,) = entries("m", rate_limits={"tokensPerMinute": 1000})

    async def scenario():
        store = MemoryStateStore()
        first = await ask(store, entry, NOW, need=900)
        refused = await ask(store, entry, NOW + 1, need=200)
        await store.finish(first, 100)  # it really used 100
        return refused, await ask(store, entry, NOW + 2, need=200)

    refused, admitted = run(scenario())
    assert isinstance(refused, Block) and refused.reason == "tokens"
    assert isinstance(admitted, Reservation)


def test_requests_per_day_reset_at_the_providers_day_boundary():
    (entry,) = entries("m", rate_limits={"requestsPerDay": 2})
    tomorrow = datetime(2026, 11, 27, 0, 0, 1, tzinfo=UTC).timestamp()

    async def scenario():
        store = MemoryStateStore()
        await ask(store, entry, NOW)
        await ask(store, entry, NOW)
        return await ask(store, entry, NOW), await ask(store, entry, tomorrow)

    refused, next_day = run(scenario())
    assert isinstance(refused, Block)
    assert refused.until == datetime(2026, 11, 27, tzinfo=UTC).timestamp()
    assert isinstance(next_day, Reservation)


def test_concurrency_slots_free_on_finish():
    (entry,) = entries("m", rate_limits={"concurrentRequests": 2})

    async def scenario():
        store = MemoryStateStore()
        first = await ask(store, entry, NOW)
        await ask(store, entry, NOW)
        third = await ask(store, entry, NOW)
        await store.finish(first, None)
        await store.finish(first, None)  # finishing twice frees one slot, not two
        return third, await ask(store, entry, NOW), await ask(store, entry, NOW)

    third, fourth, fifth = run(scenario())
    assert isinstance(third, Block) and third.reason == "concurrency"
    assert isinstance(fourth, Reservation)
    assert isinstance(fifth, Block)


def test_mid_stream_failures_escalate_2_4_8_16_30_minutes_and_reset_when_clean():
    (entry,) = entries("m")

    async def scenario():
        store = MemoryStateStore()
        rests = []
        for _ in range(8):
            block = await store.record_stream_end(entry, clean=False, now=NOW, policy=POLICY)
            rests.append(None if block is None else round((block.until - NOW) / 60))
        await store.record_stream_end(entry, clean=True, now=NOW, policy=POLICY)
        after_clean = await store.record_stream_end(entry, clean=False, now=NOW, policy=POLICY)
        return rests, after_clean

    rests, after_clean = run(scenario())
    assert rests == [None, None, 2, 4, 8, 16, 30, 30]
    assert after_clean is None


def test_a_pause_comes_first_and_keeps_the_probe_for_after_it():
    first, second = entries("m", "n")

    async def scenario():
        store = MemoryStateStore()
        await answered(store, first, rate_limited(NOW, 60), NOW)
        pause, new = await store.pause("entry:p/m", "admin#1", NOW)
        assert new and (pause.scope, pause.provider, pause.model) == ("entry", "p", "m")
        later = NOW + 120  # the cooldown is over: its probe waits for the first request
        paused = await ask(store, first, later)
        assert isinstance(paused, Block) and paused.reason == "paused"
        assert paused.detail == "entry p/m paused by admin#1"
        assert await store.check(first, later) == paused
        assert isinstance(await ask(store, second, later), Reservation)  # its own pause only

        assert await store.resume("p", "m") == 1
        probe = await ask(store, first, later)
        assert isinstance(probe, Reservation) and probe.probe_key == "bucket:p/m"
        # A provider's pause covers its entries; its resume ends its entries' pauses too.
        await store.pause("provider:p", "open", later)
        await store.pause("entry:p/n", "open", later)
        assert (await ask(store, second, later)).detail == "provider p paused by open"
        assert await store.resume("p", None) == 2
        assert await store.pauses() == []

    run(scenario())
