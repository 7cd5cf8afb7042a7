"""Rate-limit state survives a restart: export/import, and the saver on real databases."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from typing import Any

import httpx
import peewee

# The database fixtures (a fresh SQLite file and a fresh PostgreSQL database) are
# this folder's conftest.py.
from chain429.config.model import Config, RateLimits
from chain429.requestlog.database import migrate, read_connection
from chain429.requestlog.persist import StatePersister
from chain429.requestlog.tables import ProviderState, database_proxy
from chain429.routing.buckets import Bucket
from chain429.routing.limits import Reservation
from chain429.routing.memory_store import MemoryStateStore
from chain429.routing.outcome import CooldownPolicy, Kind, Outcome, classify
from chain429.routing.runtime import EntryRuntime, build_snapshot
from chain429.upstream.dialects import GENERIC

POLICY = CooldownPolicy()
OK = Outcome(Kind.SUCCESS, "200", 200)
SECRET = "hunter2-s3cret"
# A 429 on Groq's per-minute quota; its `-requests` family is the daily one: 7 of 14400 left.
GROQ_429 = httpx.Headers(
    {
        "retry-after": "300",
        "x-ratelimit-limit-requests": "14400",
        "x-ratelimit-remaining-requests": "7",
        "x-ratelimit-reset-requests": "2h",
    }
)


def make_entries() -> dict[str, EntryRuntime]:
    """`cool/m` (groq), `bad/m` (a provider whose key will be refused), `daily/m` (10/day)."""
    config = Config.model_validate(
        {
            "providers": [
                {"id": "cool", "type": "groq", "apiKey": "k"},
                {"id": "bad", "type": "groq", "apiKey": "k"},
                {
                    "id": "daily",
                    "type": "generic-openai",
                    "baseUrl": "http://127.0.0.1:9/v1",
                    "apiKey": "k",
                    "rateLimits": {"requestsPerDay": 10, "requestsPerMinute": 5},
                },
            ],
            "chains": [
                {
                    "name": "c",
                    "entries": [
                        {"provider": "cool", "model": "m"},
                        {"provider": "bad", "model": "m"},
                        {"provider": "daily", "model": "m"},
                    ],
                }
            ],
        }
    )
    return {e.provider_id: e for e in build_snapshot(config).chains["c"].entries}


async def answer(store, entry, status, now, headers=None, body=b""):
    """One request through the store: reserve, the provider's answer, finish."""
    reservation = await store.reserve(entry, 0, now)
    assert isinstance(reservation, Reservation), reservation
    headers = headers if headers is not None else httpx.Headers({})
    outcome = OK if status == 200 else classify(status, headers, body, None, now=now, policy=POLICY)
    block = await store.record(reservation, outcome, headers, body, now, POLICY)
    await store.finish(reservation, None)
    return block


def through_json(items: dict[str, Any]) -> dict[str, Any]:
    """What a database row gives back."""
    return {key: json.loads(json.dumps(value)) for key, value in items.items()}


async def lived_through_a_day(now: float) -> tuple[MemoryStateStore, dict[str, EntryRuntime]]:
    """A store that saw a Groq 429 (and its daily reading), a refused key, three requests
    on a configured daily quota."""
    store, e = MemoryStateStore(), make_entries()
    await answer(store, e["cool"], 429, now, GROQ_429)
    await answer(store, e["bad"], 401, now)
    for _ in range(3):
        await answer(store, e["daily"], 200, now)
    return store, e


def test_round_trip_keeps_cooldowns_unhealthy_marks_day_counts_and_readings():
    now = time.time()

    async def scenario():
        store, e = await lived_through_a_day(now)
        later = now + 1  # the restart
        before = {k: await store.check(v, later) for k, v in e.items()}
        exported = store.export_state(later)

        restored = MemoryStateStore()
        taken = restored.import_state(through_json(exported), later)
        after = {k: await restored.check(v, later) for k, v in e.items()}
        quotas = {k: await restored.bucket_quotas(v, later) for k, v in e.items()}
        return store, restored, exported, taken, before, after, quotas, e

    store, restored, exported, taken, before, after, quotas, e = asyncio.run(scenario())
    assert taken == len(exported)
    assert set(exported) == {
        "block:bucket:cool/m",
        "block:provider:bad",
        "bucket:cool/m",
        "bucket:bad/m",
        "bucket:daily/m",
    }
    # The cooldown and the unhealthy mark come back to the same instant.
    assert after["cool"] == before["cool"] and after["cool"].reason == "cooldown"
    assert after["bad"] == before["bad"] and after["bad"].reason == "unhealthy"
    assert after["bad"].scope == "provider"
    assert after["daily"] is None
    # The day's count of the configured quota, and the minute's.
    daily = {(q["kind"], q["window"]): q for q in quotas["daily"]}
    assert daily[("requests", "day")]["remaining"] == 7
    assert daily[("requests", "minute")]["remaining"] == 2
    # Groq's header reading of its daily quota.
    groq = {(q["kind"], q["window"]): q for q in quotas["cool"]}
    assert groq[("requests", "day")]["remaining"] == 7
    assert groq[("requests", "day")]["limit"] == 14400
    assert groq[("requests", "day")]["source"] == "header"
    # Strikes come back too: the next 429 escalates as it would have.
    assert restored._buckets["cool/m"].strikes == store._buckets["cool/m"].strikes == 1
    # Nothing in flight is carried over.
    assert asyncio.run(restored.in_flight(e["daily"])) == 0
    # And the restored store exports what it was given (minute windows per second).
    assert through_json(restored.export_state(now + 1)) == through_json(exported)


def test_a_restored_cooldown_ends_with_a_probe_like_any_other():
    now = time.time()

    async def scenario():
        store, e = await lived_through_a_day(now)
        restored = MemoryStateStore()
        restored.import_state(through_json(store.export_state(now)), now)
        later = now + 400
        first = await restored.reserve(e["cool"], 0, later)
        second = await restored.reserve(e["cool"], 0, later)
        return first, second

    first, second = asyncio.run(scenario())
    assert isinstance(first, Reservation) and first.probe_key == "bucket:cool/m"
    assert not isinstance(second, Reservation) and second.reason == "probing"


def test_expired_state_is_dropped():
    now = time.time()

    async def scenario():
        store, e = await lived_through_a_day(now)
        exported = through_json(store.export_state(now))
        tomorrow = now + 2 * 86400
        restored = MemoryStateStore()
        restored.import_state(exported, tomorrow)
        checks = [await restored.check(v, tomorrow) for v in e.values()]
        return restored, checks, e, tomorrow

    restored, checks, e, tomorrow = asyncio.run(scenario())
    assert checks == [None, None, None]
    assert asyncio.run(restored.snapshot(tomorrow)) == []
    daily_quotas = asyncio.run(restored.bucket_quotas(e["daily"], tomorrow))
    daily = {(q["kind"], q["window"]): q for q in daily_quotas}
    assert daily[("requests", "day")]["remaining"] == 10
    assert daily[("requests", "minute")]["remaining"] == 5
    # The reading reset long ago.
    assert asyncio.run(restored.bucket_quotas(e["cool"], tomorrow)) == []
    # Only the 429's strike count (a success resets it, not time) is still worth saving.
    assert restored.export_state(tomorrow) == {
        "bucket:cool/m": {"key": "cool/m", "dialect": "groq", "strikes": 1}
    }


def test_export_gives_only_live_state():
    now = time.time()

    async def scenario():
        store, e = await lived_through_a_day(now)
        return store.export_state(now + 86400 * 2)

    exported = asyncio.run(scenario())
    # Blocks ended, the day is over: what is left is the 429's strike, nothing else.
    assert exported == {"bucket:cool/m": {"key": "cool/m", "dialect": "groq", "strikes": 1}}


def test_import_never_shortens_a_block_in_force():
    now = time.time()

    async def scenario():
        store, e = MemoryStateStore(), make_entries()
        long = await answer(store, e["cool"], 429, now, httpx.Headers({"retry-after": "3000"}))
        saved = {
            "block:bucket:cool/m": {
                "reason": "cooldown",
                "until": now + 10,
                "scope": "bucket",
                "detail": "short",
                "source": "header",
            }
        }
        store.import_state(saved, now)
        return long, await store.check(e["cool"], now)

    long, after = asyncio.run(scenario())
    assert after == long and after.until >= now + 3000


def test_a_restored_block_longer_than_the_one_in_memory_wins():
    now = time.time()

    async def scenario():
        store, e = MemoryStateStore(), make_entries()
        await answer(store, e["cool"], 429, now, httpx.Headers({"retry-after": "10"}))
        until = now + 5000
        store.import_state(
            {"block:bucket:cool/m": {"reason": "cooldown", "until": until, "scope": "bucket"}}, now
        )
        return until, await store.check(e["cool"], now)

    until, after = asyncio.run(scenario())
    assert after.until == until


def test_malformed_items_are_skipped_not_raised(caplog):
    now = time.time()
    store = MemoryStateStore()
    with caplog.at_level(logging.WARNING, logger="chain429.routing.limits"):
        taken = store.import_state(
            {
                "block:bucket:x/m": {"until": "soon"},
                "block:nowhere": {"reason": "cooldown", "until": now + 60, "scope": "bucket"},
                "bucket:x/m": {"key": "other/m", "dialect": "groq"},
                "bucket:y/m": {"key": "y/m", "dialect": "groq", "readings": [{"kind": "?"}]},
                "streamfail:x/m": {"failures": "many"},
                "mystery": {},
                "block:entry:ok/m": {"reason": "unstable", "until": now + 60, "scope": "entry"},
            },
            now,
        )
    assert taken == 1
    assert [b["key"] for b in asyncio.run(store.snapshot(now))] == ["entry:ok/m"]
    assert len(caplog.records) == 6


def test_stream_failures_survive_and_a_clean_stream_clears_them():
    now = time.time()
    entry = make_entries()["cool"]

    async def scenario():
        store = MemoryStateStore()
        await store.record_stream_end(entry, clean=False, now=now, policy=POLICY)
        exported = store.export_state(now)
        restored = MemoryStateStore()
        restored.import_state(through_json(exported), now)
        # The second failure in a row counts from the restored one.
        twice = CooldownPolicy(mid_stream_threshold=2)
        again = await restored.record_stream_end(entry, clean=False, now=now, policy=twice)
        await restored.record_stream_end(entry, clean=True, now=now, policy=POLICY)
        return exported, again, restored.export_state(now)

    exported, again, cleared = asyncio.run(scenario())
    assert exported == {"streamfail:cool/m": {"failures": 1}}
    assert again is not None and again.reason == "unstable" and "2 streams" in again.detail
    assert "streamfail:cool/m" not in cleared


def test_minute_windows_are_saved_per_second_exact_in_count():
    bucket = Bucket("b/m", GENERIC)
    now = 1_000_000.0
    limits = RateLimits(requests_per_minute=100, tokens_per_minute=100_000)
    for i in range(50):
        bucket.reserve(100, now - 30 + i * 0.01, limits)  # 50 requests within half a second
    bucket.reserve(7, now - 70, limits)  # outside the window
    data = bucket.to_dict(now)
    assert data is not None
    assert len(data["minute_requests"]) <= 2
    assert sum(n for _, n in data["minute_requests"]) == 51 - 1
    assert sum(n for _, n in data["minute_tokens"]) == 5000
    restored = Bucket.from_dict(json.loads(json.dumps(data)), now)
    assert len(restored.minute_requests) == 50
    # Never earlier than the request it stands for: the window frees no sooner.
    assert min(restored.minute_requests) >= now - 30


# ---------------------------------------------------------------- the saver


def rows(database: peewee.Database) -> dict[str, dict[str, Any]]:
    with read_connection(database):
        query = ProviderState.select().bind(database)
        return {row.key: json.loads(row.data) for row in query}


async def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_persister_writes_on_change_and_at_stop_and_a_new_process_loads_it(migrated):
    now = time.time()
    e = make_entries()

    async def first_process():
        store = MemoryStateStore()
        persister = StatePersister(store, migrated, interval_s=0.05)
        assert await asyncio.to_thread(persister.load) == 0
        persister.start()
        await answer(store, e["cool"], 429, now, httpx.Headers({"retry-after": "300"}))
        await wait_for(lambda: "block:bucket:cool/m" in rows(migrated))
        writes = persister.writes
        await asyncio.sleep(0.2)
        unchanged = persister.writes == writes  # nothing new: no transaction
        # A change just before stop is in the final write, not lost.
        await store.record_stream_end(e["daily"], clean=False, now=now, policy=POLICY)
        await persister.stop()
        return unchanged, persister

    unchanged, persister = asyncio.run(first_process())
    assert unchanged
    saved = rows(migrated)
    assert set(saved) == {"block:bucket:cool/m", "bucket:cool/m", "streamfail:daily/m"}
    assert saved["block:bucket:cool/m"]["reason"] == "cooldown"
    assert persister.failures == 0

    async def second_process():
        store = MemoryStateStore()
        persister = StatePersister(store, migrated, interval_s=0.05)
        taken = await asyncio.to_thread(persister.load)
        block = await store.check(e["cool"], time.time())
        # The stream comes back clean: its row goes at the next write.
        persister.start()
        await store.record_stream_end(e["daily"], clean=True, now=now, policy=POLICY)
        await wait_for(lambda: "streamfail:daily/m" not in rows(migrated))
        await persister.stop()
        return taken, block

    taken, block = asyncio.run(second_process())
    assert taken == 3
    assert block is not None and block.reason == "cooldown" and block.until >= now + 300
    assert set(rows(migrated)) == {"block:bucket:cool/m", "bucket:cool/m"}


def test_what_a_provider_says_no_with_is_saved_at_once_not_at_the_tick(migrated):
    """A cooldown, a refused key, a quota read at zero: each is in the table well before
    the saver's next tick (a minute away here). An answer that teaches nothing new is not
    written until the tick."""
    now = time.time()
    e = make_entries()
    day_gone = httpx.Headers(
        {
            "x-ratelimit-limit-requests": "14400",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "2h",
        }
    )

    async def process():
        store = MemoryStateStore()
        persister = StatePersister(store, migrated, interval_s=60.0)
        await asyncio.to_thread(persister.load)
        persister.start()
        await answer(store, e["daily"], 200, now)  # nothing learnt: waits for the tick
        await asyncio.sleep(0.3)
        quiet = persister.writes
        await answer(store, e["cool"], 200, now, day_gone)  # a 200 that says "none left today"
        await wait_for(lambda: "bucket:cool/m" in rows(migrated), timeout=1.0)
        await answer(store, e["bad"], 401, now)
        await wait_for(lambda: "block:provider:bad" in rows(migrated), timeout=1.0)
        await persister.stop()
        return quiet

    assert asyncio.run(process()) == 0
    (reading,) = rows(migrated)["bucket:cool/m"]["readings"]
    assert (reading["kind"], reading["window"], reading["remaining"]) == ("requests", "day", 0)


def test_expired_rows_are_deleted_at_the_first_write(migrated):
    now = time.time()
    e = make_entries()

    async def scenario():
        store = MemoryStateStore()
        await answer(store, e["cool"], 429, now - 1000, httpx.Headers({"retry-after": "10"}))
        await answer(store, e["daily"], 429, now, httpx.Headers({"retry-after": "300"}))
        clock = [now - 999.0]
        persister = StatePersister(store, migrated, clock=lambda: clock[0])
        await persister.save()  # both blocks in force, as of then
        clock[0] = now
        restarted = StatePersister(MemoryStateStore(), migrated)
        await asyncio.to_thread(restarted.load)
        await restarted.stop()  # first write of the new process

    asyncio.run(scenario())
    assert set(rows(migrated)) == {"block:bucket:daily/m", "bucket:daily/m", "bucket:cool/m"}


def test_a_failing_database_is_logged_retried_and_never_raised(caplog):
    now = time.time()
    e = make_entries()
    broken = peewee.PostgresqlDatabase(
        "nowhere",
        host="127.0.0.1",
        port=1,
        user="chain429",
        password=SECRET,
        connect_timeout=1,
        prefer_psycopg3=True,
    )
    unset = peewee.SqliteDatabase(None)  # never initialized: every connect fails

    async def scenario(database):
        store = MemoryStateStore()
        persister = StatePersister(store, database, interval_s=0.02)
        assert await asyncio.to_thread(persister.load) == 0
        persister.start()
        await answer(store, e["cool"], 429, now, httpx.Headers({"retry-after": "300"}))
        await asyncio.sleep(0.2)
        await persister.stop()
        return persister, await store.check(e["cool"], now)

    with caplog.at_level(logging.WARNING, logger="chain429.requestlog.persist"):
        for database in (broken, unset):
            persister, block = asyncio.run(scenario(database))
            assert persister.failures >= 2 and persister.writes == 0
            assert block is not None  # the store itself is untouched by the failures
    assert persister.last_error is not None
    assert caplog.records
    assert SECRET not in caplog.text


def test_a_database_that_comes_back_is_written_again(tmp_path):
    path = tmp_path / "late.db"
    database = peewee.SqliteDatabase(str(path))  # no tables yet: every write fails
    e = make_entries()

    async def scenario():
        store = MemoryStateStore()
        persister = StatePersister(store, database, interval_s=0.02)
        persister.start()
        await answer(store, e["cool"], 429, time.time(), httpx.Headers({"retry-after": "300"}))
        await asyncio.sleep(0.1)
        failed = persister.failures
        await asyncio.to_thread(migrate, database)
        await wait_for(lambda: persister.writes > 0)
        await persister.stop()
        return failed, persister

    saved_proxy = database_proxy.obj
    try:
        failed, persister = asyncio.run(scenario())
    finally:
        database_proxy.initialize(saved_proxy)  # migrate() rebinds the models
    assert failed >= 1
    assert persister.last_error is None
    with sqlite3.connect(path) as conn:
        keys = {row[0] for row in conn.execute("SELECT key FROM provider_state")}
    assert "block:bucket:cool/m" in keys


def test_a_slow_database_does_not_block_the_event_loop(tmp_path):
    path = tmp_path / "busy.db"
    database = peewee.SqliteDatabase(str(path), pragmas=[("busy_timeout", 5000)])
    saved_proxy = database_proxy.obj
    try:
        migrate(database)
    finally:
        database_proxy.initialize(saved_proxy)
    e = make_entries()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock

    async def scenario():
        store = MemoryStateStore()
        await answer(store, e["cool"], 429, time.time(), httpx.Headers({"retry-after": "300"}))
        persister = StatePersister(store, database)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        saving = asyncio.create_task(persister.save())
        await asyncio.sleep(0.4)
        ticked_while_waiting = ticks
        blocker.execute("COMMIT")
        written = await saving
        ticking.cancel()
        await asyncio.gather(ticking, return_exceptions=True)
        return ticked_while_waiting, written

    try:
        ticked, written = asyncio.run(scenario())
    finally:
        blocker.close()
    assert ticked >= 10
    assert written is True


def test_stop_without_start_still_writes(migrated):
    async def scenario():
        store = MemoryStateStore()
        await store.record_stream_end(
            make_entries()["cool"], clean=False, now=time.time(), policy=POLICY
        )
        await StatePersister(store, migrated).stop()

    asyncio.run(scenario())
    assert set(rows(migrated)) == {"streamfail:cool/m"}
