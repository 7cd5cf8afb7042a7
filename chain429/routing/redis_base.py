"""The Redis state store's base: its connection, keys and clock, and its calls off the request path.

`RedisStateStore` (redis_store.py) adds what a request does (reserve, record,
finish). Here: starting and stopping (the link to Redis, the lease renewer),
the key names and the clock offset both halves use, the fallback when Redis
is away, what /v1/ratelimits, /metrics and the CLI read (blocks, breakers,
buckets, paid budgets), and a person's calls (clear a cooldown, forget a
provider, pause and resume: routing/pauses.py). Paid budgets are
chain429.routing.redis_budget's.

Pauses are shared, so they are changed only on Redis: with Redis away, pausing
or resuming raises `StateStoreUnavailable` whatever `stateStoreFailure` says,
rather than pause one instance and not the others. The local store keeps a
copy of the pauses last read (at start, on each listing, on each change made
here), so an instance serving on its own limits during an outage still skips
what was paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import secrets
import socket
import time
from collections.abc import Sequence
from typing import Any, Literal, cast

from chain429.routing.buckets import Bucket
from chain429.routing.budget import BudgetCap, BudgetDay
from chain429.routing.limits import StateStoreUnavailable, StoreDown, _names_provider, scope_keys
from chain429.routing.memory_store import MemoryStateStore
from chain429.routing.outcome import BlockReason
from chain429.routing.pauses import Pause, ended_by_resume
from chain429.routing.redis_budget import RedisBudgets
from chain429.routing.redis_link import RedisLink
from chain429.routing.redis_scripts import block_from, bucket_from, pause_from, pause_value
from chain429.routing.runtime import ClientRuntime, EntryRuntime
from chain429.upstream.dialects import GENERIC, Dialect

Failure = Literal["open", "closed"]


class RedisStateBase:
    """What both halves of the Redis store share; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "chain429",
        failure: Failure = "open",
        lease_s: float = 30.0,
        timeout_s: float = 1.0,
    ) -> None:
        self._prefix = "{" + namespace + "}:"
        self.failure = failure
        self.lease_s = lease_s
        self.instance = f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}"
        self.link = RedisLink(
            url, timeout_s=timeout_s, channel=self._prefix + "wake", instance=self.instance
        )
        # This instance's own limits, for when Redis is unreachable (failure "open").
        self.local = MemoryStateStore()
        self._ids = itertools.count(1)
        self._offset = 0.0  # Redis's clock minus ours, from the last answer
        self._open: dict[str, str] = {}  # member -> its lease key, renewed while open
        self._background: set[asyncio.Task[Any]] = set()
        self._renewer: asyncio.Task[None] | None = None
        self.budgets = RedisBudgets(self)  # paid budgets: the day's spend, calls' holds

    # -- life ----------------------------------------------------------------

    @property
    def problem(self) -> str | None:
        """Why the shared state is not in use right now, or None."""
        return self.link.problem

    def set_waker(self, wake: Any) -> None:
        """`wake()` is called when another instance freed something queued requests wait for."""
        self.link.on_wake = wake

    async def start(self) -> None:
        await self.link.start()
        if self.link.up:
            with contextlib.suppress(StoreDown):
                await self._measure_clock()
            with contextlib.suppress(StoreDown):
                await self._read_pauses()
        self._renewer = asyncio.ensure_future(self._renew_leases())

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.link.aclose()

    async def _measure_clock(self) -> None:
        seconds, micros = await self.link.run(lambda client: client.time())
        self._offset = seconds + micros / 1e6 - time.time()

    def _clock(self, redis_now: float) -> float:
        """Note Redis's clock from an answer; returns the offset to subtract from its times."""
        self._offset = redis_now - time.time()
        return self._offset

    async def _renew_leases(self) -> None:
        """Keep the slots of running requests: a dead instance's slots lapse, ours do not."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            if not self._open or not self.link.up:
                continue
            expiry = time.time() + self._offset + self.lease_s
            held = list(self._open.items())

            with contextlib.suppress(StoreDown):
                await self.link.run(functools.partial(_renew, held=held, expiry=expiry))

    def _fallback(self) -> MemoryStateStore:
        if self.failure == "closed":
            raise StateStoreUnavailable(self.problem or "the shared state store is unreachable")
        return self.local

    # -- who shares the store ----------------------------------------------------

    async def announce(self, record: dict[str, Any], ttl_s: float) -> None:
        """Say this instance is alive: its record, gone `ttl_s` after the last announcement.

        Each record is its own key with an expiry (a killed instance's record
        lapses by itself), listed in a sorted set by that expiry (so a listing
        reads the live ones without a SCAN over the whole Redis).
        """
        key, index = self._k(f"inst:{self.instance}"), self._k("instances")
        ttl_ms = max(1, int(ttl_s * 1000))
        expiry = time.time() + self._offset + ttl_s

        async def write(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            pipe.set(key, json.dumps(record), px=ttl_ms)
            pipe.zadd(index, {self.instance: expiry})
            pipe.pexpire(index, ttl_ms)
            await pipe.execute()

        await self.link.run(write)

    async def withdraw(self) -> None:
        """A graceful stop: this instance leaves the list now, not when its record lapses."""

        async def remove(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            pipe.delete(self._k(f"inst:{self.instance}"))
            pipe.zrem(self._k("instances"), self.instance)
            await pipe.execute()

        with contextlib.suppress(StoreDown):
            await self.link.run(remove)

    async def instances(self) -> list[dict[str, Any]]:
        """The records of every live instance on this namespace (raises StoreDown)."""
        index = self._k("instances")

        async def read(client: Any) -> list[Any]:
            now = time.time() + self._offset
            pipe = client.pipeline(transaction=False)
            pipe.zremrangebyscore(index, "-inf", now)
            pipe.zrange(index, 0, -1)
            names = (await pipe.execute())[1]
            if not names:
                return []
            return cast(list[Any], await client.mget([self._k(f"inst:{n}") for n in names]))

        found = []
        for value in await self.link.run(read):
            if value is not None:  # lapsed between the two reads
                with contextlib.suppress(ValueError):
                    found.append(json.loads(value))
        return found

    # -- keys ------------------------------------------------------------------

    def _k(self, name: str) -> str:
        return self._prefix + name

    def _bucket_keys(self, bucket: str) -> list[str]:
        k = self._k
        return [
            k("blocks"),
            k("probes"),
            k(f"b:{bucket}"),
            k(f"rd:{bucket}"),
            k(f"lease:{bucket}"),
            k(f"rpm:{bucket}"),
            k(f"tpm:{bucket}"),
            k("breakers"),
            k("paused"),
        ]

    def _client_keys(self, name: str) -> list[str]:
        """A client's counters, laid out as a bucket's (`_bucket_keys`) under prefixes of
        their own; its readings key is never written (no provider reports on a client)."""
        k = self._k
        return [
            k("blocks"),
            k("probes"),
            k(f"cl:{name}"),
            k(f"clrd:{name}"),
            k(f"cllease:{name}"),
            k(f"clrpm:{name}"),
            k(f"cltpm:{name}"),
            k("breakers"),
            k("paused"),  # the script looks for a pause first; none is ever under a client's
        ]

    # -- reading -------------------------------------------------------------------

    async def snapshot(self, now: float) -> list[dict[str, object]]:
        async def read(client: Any) -> tuple[dict[str, str], tuple[int, int]]:
            pipe = client.pipeline(transaction=False)
            pipe.hgetall(self._k("blocks"))
            pipe.time()
            blocks, clock = await pipe.execute()
            return blocks, clock

        try:
            blocks, (seconds, micros) = await self.link.run(read)
        except StoreDown:
            return await self._fallback().snapshot(now)
        redis_now = seconds + micros / 1e6
        offset = self._clock(redis_now)
        found = []
        for key, value in sorted(blocks.items()):
            block = block_from(value, offset)
            if block.until + offset > redis_now:
                found.append(
                    {
                        "key": key,
                        "scope": block.scope,
                        "reason": block.reason,
                        "detail": block.detail,
                        "source": block.source,
                        "until": block.until,
                        "remaining_ms": int((block.until + offset - redis_now) * 1000),
                    }
                )
        return found

    async def breaker(self, entry: EntryRuntime, now: float) -> dict[str, object]:
        key = scope_keys(entry)[2]
        k = self._k

        async def read(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.hget(k("breakers"), key)
            pipe.hget(k("blocks"), key)
            pipe.time()
            return cast(list[Any], await pipe.execute())

        try:
            counted, blocked, (seconds, micros) = await self.link.run(read)
        except StoreDown:
            return await self._fallback().breaker(entry, now)
        failures, _, is_open = (counted or "0|0").partition("|")
        if is_open != "1":
            return {"state": "closed", "failures": int(failures), "until": None, "reason": None}
        redis_now = seconds + micros / 1e6
        block = block_from(blocked, self._clock(redis_now)) if blocked else None
        if block is not None and block.reason == BlockReason.BREAKER and block.until > time.time():
            return {
                "state": "open",
                "failures": int(failures),
                "until": block.until,
                "reason": block.detail,
            }
        return {
            "state": "half_open",
            "failures": int(failures),
            "until": None,
            "reason": f"{failures} transient failures in a row; the next request probes it",
        }

    async def spend_report(
        self, caps: Sequence[BudgetCap], day: BudgetDay, now: float
    ) -> list[dict[str, Any]]:
        return await self.budgets.report(caps, day, now)

    async def bucket_quotas(self, entry: EntryRuntime, now: float) -> list[dict[str, object]]:
        try:
            bucket = await self._read_bucket(entry)
        except StoreDown:
            return await self._fallback().bucket_quotas(entry, now)
        return bucket.describe(entry.limits, time.time())

    async def in_flight(self, entry: EntryRuntime) -> int:
        try:
            bucket = await self._read_bucket(entry)
        except StoreDown:
            return await self._fallback().in_flight(entry)
        return bucket.in_flight

    async def client_quotas(self, client: ClientRuntime, now: float) -> list[dict[str, object]]:
        if client.limits is None:
            return []
        keys = self._client_keys(client.name)
        try:
            bucket = await self._read_bucket_at(client.bucket, GENERIC, keys)
        except StoreDown:
            return await self._fallback().client_quotas(client, now)
        bucket.zone = client.zone
        return bucket.describe(client.limits, time.time())

    async def _read_bucket(self, entry: EntryRuntime) -> Bucket:
        return await self._read_bucket_at(
            entry.bucket, entry.dialect, self._bucket_keys(entry.bucket)
        )

    async def _read_bucket_at(self, key: str, dialect: Dialect, keys: list[str]) -> Bucket:
        """The bucket as Redis has it, on our clock: the memory store's Bucket describes it."""

        async def read(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.hgetall(keys[3])
            pipe.hmget(keys[2], "day_end", "day_req", "day_tok", "strikes")
            for key in keys[4:7]:
                pipe.zrange(key, 0, -1, withscores=True)
            pipe.time()
            return cast(list[Any], await pipe.execute())

        readings, day, leases, rpm, tpm, (seconds, micros) = await self.link.run(read)
        redis_now = seconds + micros / 1e6
        offset = self._clock(redis_now)
        return bucket_from(key, dialect, readings, day, leases, rpm, tpm, redis_now, offset)

    # -- a person's calls --------------------------------------------------------------

    async def forget_provider(self, provider_id: str) -> None:
        await self.local.forget_provider(provider_id)
        k = self._k

        async def forget(client: Any) -> None:
            for table in ("blocks", "probes", "streamfail", "breakers"):
                names = await client.hkeys(k(table))
                mine = [n for n in names if _names_provider(n.partition(":")[2], provider_id)]
                if mine:
                    await client.hdel(k(table), *mine)
            for kind in ("b", "rd", "lease", "rpm", "tpm"):
                pattern = _glob_escape(f"{k(kind)}:{provider_id}/") + "*"
                async for key in client.scan_iter(match=pattern, count=500):
                    await client.delete(key)

        with contextlib.suppress(StoreDown):
            await self.link.run(forget)

    async def clear(self, provider_id: str, entries: Sequence[EntryRuntime], now: float) -> int:
        k = self._k
        try:
            if entries:
                keys = sorted({key for entry in entries for key in scope_keys(entry)})
            else:
                names = cast(list[str], await self.link.run(lambda c: c.hkeys(k("blocks"))))
                keys = [n for n in names if _names_provider(n.partition(":")[2], provider_id)]
            cleared = await self.link.script(
                "clear",
                [k("blocks"), k("probes"), k("streamfail"), k("breakers")],
                [self.link.channel, self.instance, *keys],
            )

            async def unstrike(client: Any) -> None:
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    if key.startswith("bucket:"):
                        name = k("b:" + key.removeprefix("bucket:"))
                        pipe.hset(name, "strikes", 0)
                        pipe.expire(name, 172800)
                await pipe.execute()

            await self.link.run(unstrike)
        except StoreDown:
            return await self._fallback().clear(provider_id, entries, now)
        return int(cleared)

    async def pause(self, key: str, by: str, now: float) -> tuple[Pause, bool]:
        name = self._k("paused")
        wanted = Pause(key, now, by)

        async def write(client: Any) -> tuple[bool, str]:
            pipe = client.pipeline(transaction=True)
            pipe.hsetnx(name, key, pause_value(wanted))
            pipe.hget(name, key)
            new, value = await pipe.execute()
            return bool(new), value

        try:
            new, value = await self.link.run(write)
        except StoreDown:
            raise self._pauses_need_redis() from None
        pause = pause_from(key, value)
        await self.local.pause(key, pause.by, pause.since)
        return pause, new

    async def resume(self, provider_id: str, model: str | None) -> int:
        name = self._k("paused")

        async def remove(client: Any) -> int:
            keys = [k for k in await client.hkeys(name) if ended_by_resume(k, provider_id, model)]
            if not keys:
                return 0
            pipe = client.pipeline(transaction=True)
            pipe.hdel(name, *keys)
            # Queued requests on every instance look again: an entry is back.
            pipe.publish(self.link.channel, self.instance)
            ended, _ = await pipe.execute()
            return int(ended)

        try:
            ended = await self.link.run(remove)
        except StoreDown:
            raise self._pauses_need_redis() from None
        await self.local.resume(provider_id, model)
        return ended

    async def pauses(self) -> list[Pause]:
        try:
            return await self._read_pauses()
        except StoreDown:
            return await self._fallback().pauses()

    async def _read_pauses(self) -> list[Pause]:
        """The pauses on Redis, copied into the local store for an outage (raises StoreDown)."""
        found = await self.link.run(lambda client: client.hgetall(self._k("paused")))
        pauses = [pause_from(str(key), str(value)) for key, value in sorted(found.items())]
        self.local.mirror_pauses(pauses)
        return pauses

    def _pauses_need_redis(self) -> StateStoreUnavailable:
        return StateStoreUnavailable(
            "the shared state store is unreachable, and a pause must hold on every instance: "
            "pause or resume once it is back"
        )


def _glob_escape(text: str) -> str:
    """`text` matched literally by SCAN's MATCH pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


async def _renew(client: Any, held: list[tuple[str, str]], expiry: float) -> None:
    """Push the expiry of held leases (only those still there: XX)."""
    pipe = client.pipeline(transaction=False)
    for member, key in held:
        pipe.zadd(key, {member: expiry}, xx=True)
    await pipe.execute()
