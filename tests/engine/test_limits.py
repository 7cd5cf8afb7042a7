"""The memory state store: blocks by scope, never shortened, escalating stream cooldowns."""

from __future__ import annotations

import asyncio

from chain429.limits import MemoryStateStore
from chain429.outcome import CooldownPolicy, Kind, Outcome, Scope

NOW = 1_000_000.0
POLICY = CooldownPolicy()


def rate_limited(until, scope=Scope.ENTRY):
    return Outcome(Kind.RATE_LIMITED, "429", 429, until, scope)


def test_a_new_cooldown_never_shortens_a_longer_one():
    async def scenario():
        store = MemoryStateStore()
        await store.record("p", "m", rate_limited(NOW + 300))
        await store.record("p", "m", rate_limited(NOW + 10))
        return await store.check("p", "m", NOW + 100)

    block = asyncio.run(scenario())
    assert block is not None and block.until == NOW + 300


def test_provider_scope_blocks_every_model_and_entry_scope_one():
    async def scenario():
        store = MemoryStateStore()
        await store.record(
            "p", "a", Outcome(Kind.QUOTA_EXHAUSTED, "402", 402, NOW + 60, Scope.PROVIDER)
        )
        await store.record("q", "a", rate_limited(NOW + 60))
        return [await store.check(p, m, NOW) for p, m in [("p", "b"), ("q", "a"), ("q", "b")]]

    on_p, on_qa, on_qb = asyncio.run(scenario())
    assert on_p is not None and on_p.reason == "quota"
    assert on_qa is not None and on_qa.reason == "cooldown"
    assert on_qb is None


def test_blocks_expire():
    async def scenario():
        store = MemoryStateStore()
        await store.record("p", "m", rate_limited(NOW + 5))
        return await store.check("p", "m", NOW + 5.001), await store.snapshot(NOW + 6)

    assert asyncio.run(scenario()) == (None, [])


def test_mid_stream_failures_escalate_2_4_8_16_30_minutes_and_reset_when_clean():
    async def scenario():
        store = MemoryStateStore()
        rests = []
        for _ in range(8):
            block = await store.record_stream_end("p", "m", clean=False, now=NOW, policy=POLICY)
            rests.append(None if block is None else round((block.until - NOW) / 60))
        await store.record_stream_end("p", "m", clean=True, now=NOW, policy=POLICY)
        after_clean = await store.record_stream_end("p", "m", clean=False, now=NOW, policy=POLICY)
        return rests, after_clean

    rests, after_clean = asyncio.run(scenario())
    assert rests == [None, None, 2, 4, 8, 16, 30, 30]
    assert after_clean is None
