"""The shared state store: N chain429 instances, one view of every limit, on Redis.

Same protocol and the same rules as `MemoryStateStore` (memory_store.py), with the
state in Redis so that instances agree: a 429 one instance sees is skipped by
the others, a 20-per-minute entry takes 20 in all, and a daily count survives
restarting every instance. What must be atomic runs as one Lua script
(redis_scripts.py) on Redis's own clock; what is pure (reading headers and
429 bodies, the provider's day, the cooldown a status means) is computed
here and sent along as durations, so a host whose clock is off does not
shift anybody's cooldown. This module is the request path (reserve, record,
finish); the connection, the keys, the reads for reports and a person's
calls are the base's (redis_base.py).

A request costs two round trips when it succeeds: `reserve` (it must be
answered before the call) and `finish`, which also carries what a success
teaches (strikes reset). Only `reserve` holds the request up, unless the
bucket has a concurrency or token limit: then the answer waits for `finish`
too, so the slot or the real token count is there for the next request.
Otherwise the finish rides with the next call to Redis (within 50 ms), so a
steady stream of requests costs one round trip each.
Quota headers on a success are sent as soon as they are read, without making
the request wait; the answer to a probe is awaited (every instance waits on
it). A failed call records (one round trip, awaited: the router needs the
block) and finishes.

A client's own limits (`reserve_client`, `finish_client`) run the same two
scripts on the client's own keys: its counters are a bucket that no provider
ever reports on, whose day ends at the server's midnight (`settings.timeZone`),
so the script's day boundary is computed here from that zone.

Concurrency slots are leases: a reservation holds a member of the bucket's
lease set with an expiry, renewed every third of the lease while the request
runs. An instance that dies stops renewing, and its slots come back within
one lease.

When Redis cannot be reached (redis_link.py opens a breaker), the
`stateStoreFailure` setting decides: `open` serves with this instance's own
memory store until Redis is back (`problem` says why, for /health and
metrics); `closed` raises `StateStoreUnavailable` (a 503) for every request
that needs a decision. Recording and finishing never raise: the upstream has
answered already, and a lease runs out by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from chain429.config.model import RateLimits
from chain429.routing import buckets as words
from chain429.routing.buckets import CONCURRENCY_RETRY_S
from chain429.routing.budget import BudgetCap, BudgetDay, SpendHold
from chain429.routing.limits import (
    HALF_OPEN_DETAIL,
    Block,
    ClientReservation,
    Reservation,
    StoreDown,
    _scope_of,
    breaker_opened,
    paused_block,
    scope_keys,
)
from chain429.routing.outcome import SKIP_REASON, BlockReason, CooldownPolicy, Kind, Outcome, Scope
from chain429.routing.redis_base import RedisStateBase
from chain429.routing.redis_scripts import block_from, pause_from
from chain429.routing.runtime import ClientRuntime, EntryRuntime
from chain429.upstream.dialects import (
    Reading,
    daily_exhausted,
    next_day_boundary,
    read_body,
    read_headers,
)
from chain429.upstream.times import next_midnight


@dataclass(slots=True)
class _RedisReservation(Reservation):
    member: str = ""  # this reservation's name in the bucket's sets
    redis_at: float = 0.0  # reserved at, on Redis's clock
    wakes: bool = False  # the bucket has a concurrency limit: finishing frees a slot
    settles: bool = False  # finishing changes what the next request may take: wait for it
    lease_key: str = ""
    succeeded: bool = False  # answered with a success: finish ends the bucket's strikes


@dataclass(slots=True)
class _RedisClientReservation(ClientReservation):
    member: str = ""
    redis_at: float = 0.0
    settles: bool = False  # a token limit: the next request must see the real count


class RedisStateStore(RedisStateBase):
    """Rate-limit state shared through Redis; see the module docstring."""

    # -- asking ------------------------------------------------------------------

    async def reserve(
        self, entry: EntryRuntime, need_tokens: int, now: float
    ) -> Reservation | Block:
        member = f"{self.instance}:{next(self._ids)}"
        try:
            reply = await self._ask(entry, need_tokens, member, reserving=True)
        except StoreDown:
            return await self._fallback().reserve(entry, need_tokens, now)
        if reply[0] != "ok":
            return self._refusal(reply, entry.limits, need_tokens)
        redis_now = float(reply[1])
        self._clock(redis_now)
        keys = self._bucket_keys(entry.bucket)
        limits = entry.limits
        reservation = _RedisReservation(
            id=0,
            entry=entry,
            need_tokens=need_tokens,
            reserved_at=now,
            probe_key=reply[2] or None,
            member=member,
            redis_at=redis_now,
            wakes=limits is not None and bool(limits.concurrent_requests),
            settles=limits is not None
            and bool(
                limits.concurrent_requests or limits.tokens_per_minute or limits.tokens_per_day
            ),
            lease_key=keys[4],
        )
        self._open[member] = keys[4]
        return reservation

    def blocks_mark(self, entries: Sequence[EntryRuntime]) -> object | None:
        return None  # another instance may end a block at any time: always ask Redis

    def blocks_unchanged(self, mark: object) -> bool:
        return False

    async def check(self, entry: EntryRuntime, now: float) -> Block | None:
        try:
            reply = await self._ask(entry, 0, "", reserving=False)
        except StoreDown:
            return await self._fallback().check(entry, now)
        return None if reply[0] == "ok" else self._refusal(reply, entry.limits, 0)

    async def _ask(
        self, entry: EntryRuntime, need_tokens: int, member: str, *, reserving: bool
    ) -> list[str]:
        limits = entry.limits
        day_end = next_day_boundary(entry.dialect, time.time() + self._offset)
        args: list[object] = [
            member,
            need_tokens,
            (limits.concurrent_requests or 0) if limits else 0,
            (limits.requests_per_minute or 0) if limits else 0,
            (limits.tokens_per_minute or 0) if limits else 0,
            (limits.requests_per_day or 0) if limits else 0,
            (limits.tokens_per_day or 0) if limits else 0,
            f"{day_end:.6f}",
            f"{self.lease_s:.3f}",
            "1" if reserving else "0",
            *scope_keys(entry),
        ]
        reply = await self.link.script("reserve", self._bucket_keys(entry.bucket), args)
        return cast(list[str], reply)

    def _refusal(self, reply: list[str], limits: RateLimits | None, need: int) -> Block:
        """A Block from the reserve script's no (times moved to our clock)."""
        what = reply[0]
        if what == "paused":
            return paused_block(pause_from(reply[1], reply[2]))
        if what == "block":
            offset = self._clock(float(reply[2]))
            return block_from(reply[1], offset)
        if what == "probing":
            self._clock(float(reply[2]))
            if reply[3] == "1":  # the entry's breaker is half-open
                return Block(BlockReason.BREAKER, time.time() + 1.0, "entry", HALF_OPEN_DETAIL)
            return Block(
                BlockReason.PROBING,
                time.time() + 1.0,
                _scope_of(reply[1]),
                "one request is probing the recovered entry",
            )
        code, until, source, a, b = reply[1], float(reply[2]), reply[3], reply[4], reply[5]
        until -= self._clock(float(reply[6]))
        reason, detail = BlockReason.LIMITED, ""
        if code == "quota_requests":
            detail = words.requests_used_up(a, b or None)
        elif code == "quota_tokens":
            reason, detail = BlockReason.TOKENS, words.tokens_left(b, a, need)
        elif code == "concurrency":
            reason, detail = BlockReason.CONCURRENCY, words.in_flight_full(a, b)
            until = time.time() + CONCURRENCY_RETRY_S
        elif code == "rpm":
            detail = words.limit_reached("requestsPerMinute", a)
        elif code == "tpm":
            limit = limits.tokens_per_minute if limits else None
            reason, detail = BlockReason.TOKENS, words.tokens_per_minute_used(limit, a, b)
        elif code == "rpd":
            detail = words.limit_reached("requestsPerDay", a)
        elif code == "tpd":
            limit = limits.tokens_per_day if limits else None
            reason, detail = BlockReason.TOKENS, words.tokens_per_day_used(limit, a)
        return Block(reason, until, "bucket", detail, source)

    # -- learning ----------------------------------------------------------------

    async def record(
        self,
        reservation: Reservation,
        outcome: Outcome,
        headers: Mapping[str, str],
        body: bytes,
        now: float,
        policy: CooldownPolicy,
    ) -> Block | None:
        if not isinstance(reservation, _RedisReservation):
            if not self.link.up:  # made by the local store while Redis is away
                return await self.local.record(reservation, outcome, headers, body, now, policy)
            # A chain test's (it asks without reserving), or one from an outage just
            # over: what it learnt is worth sharing all the same.
            reservation = _RedisReservation(
                reservation.id, reservation.entry, reservation.need_tokens, now, done=True
            )
        entry = reservation.entry
        readings = read_headers(entry.dialect, headers, now=now)
        if outcome.kind is Kind.RATE_LIMITED:
            readings += read_body(entry.dialect, body, now=now)
        if outcome.kind is Kind.SUCCESS:
            reservation.succeeded = True
        plain = not readings and reservation.probe_key is None and not reservation.done
        if outcome.kind is Kind.SUCCESS and plain:
            # All a plain success teaches (strikes end, the breaker closes) rides with finish.
            return None
        args = self._record_args(reservation, outcome, readings, headers, body, now)
        keys = self._bucket_keys(entry.bucket)
        call = self.link.script("record", [*keys[:4], keys[7]], args)
        if outcome.kind is Kind.SUCCESS and reservation.probe_key is None:
            # Quota readings: a success puts no block in force, nothing to wait for.
            self._send(call)
            return None
        try:
            reply = await call
        except StoreDown:
            if self.failure == "closed":
                return None
            mine = Reservation(reservation.id, entry, reservation.need_tokens, now)
            return await self.local.record(mine, outcome, headers, body, now, policy)
        reservation.probe_key = None
        if len(reply) >= 3:  # a transient failure: its count in a row, on every instance
            return await self._maybe_open_breaker(entry, int(reply[2]), outcome, policy)
        if len(reply) < 2:
            return None
        return block_from(reply[1], self._clock(float(reply[0])))

    async def _maybe_open_breaker(
        self, entry: EntryRuntime, failures: int, outcome: Outcome, policy: CooldownPolicy
    ) -> Block | None:
        open_s = policy.breaker_open_s(failures)
        if open_s is None:
            return None
        block = breaker_opened(entry, failures, outcome, time.time(), open_s)
        key = scope_keys(entry)[2]
        args = [key, f"{open_s:.6f}", block.reason, "entry", block.source, block.detail, "1"]
        k = self._k
        try:
            reply = await self.link.script("block", [k("blocks"), k("probes"), k("breakers")], args)
        except StoreDown:
            return None
        return block_from(reply[1], self._clock(float(reply[0])))

    def _record_args(
        self,
        reservation: _RedisReservation,
        outcome: Outcome,
        readings: list[Reading],
        headers: Mapping[str, str],
        body: bytes,
        now: float,
    ) -> list[object]:
        entry = reservation.entry
        reason = SKIP_REASON.get(outcome.kind)
        provider_key, bucket_key, entry_key = scope_keys(entry)
        key, scope = entry_key, "entry"
        daily: float | None = None
        if outcome.kind is Kind.RATE_LIMITED:
            key, scope = bucket_key, "bucket"
            daily = daily_exhausted(entry.dialect, outcome.status or 429, headers, body, now=now)
        elif outcome.scope is Scope.PROVIDER:
            key, scope = provider_key, "provider"
        kind = {
            Kind.SUCCESS: "success",
            Kind.RATE_LIMITED: "rate_limited",
            Kind.TRANSIENT: "transient",
        }.get(outcome.kind, "other")
        offset = self._offset
        args: list[object] = [
            reservation.probe_key or "",
            kind,
            reason if reason is not None and outcome.until is not None else "",
            f"{(outcome.until or now) - now:.6f}",
            f"{daily + offset:.6f}" if daily is not None else "",
            f"{next_day_boundary(entry.dialect, now + offset):.6f}",
            key,
            scope,
            outcome.source,
            outcome.reason,
            f"{random.random():.6f}",
            self.link.channel,
            self.instance,
            entry_key,
            len(readings),
        ]
        for r in readings:
            args += [
                f"{r.kind}|{r.window}",
                "" if r.limit is None else r.limit,
                "" if r.remaining is None else r.remaining,
                "" if r.reset_at is None else f"{r.reset_at - now:.6f}",
                r.source,
            ]
        return args

    def _send(self, call: Any) -> None:
        """Run a script call without making the request wait for it."""

        async def quietly() -> None:
            with contextlib.suppress(StoreDown):
                await call

        task = asyncio.ensure_future(quietly())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def hold_spend(
        self, caps: Sequence[BudgetCap], amount_usd: float, day: BudgetDay, now: float
    ) -> SpendHold | Block:
        return await self.budgets.hold(caps, amount_usd, day, now)

    async def settle_spend(self, hold: SpendHold, cost_usd: float) -> None:
        await self.budgets.settle(hold, cost_usd)

    async def finish(
        self, reservation: Reservation, used_tokens: int | None, cost_usd: float | None = None
    ) -> None:
        if reservation.done:
            return
        hold = reservation.spend
        if hold is not None:
            await self.settle_spend(hold, hold.amount_usd if cost_usd is None else cost_usd)
        if not isinstance(reservation, _RedisReservation):
            await self.local.finish(reservation, used_tokens)
            return
        reservation.done = True
        self._open.pop(reservation.member, None)
        keys = self._bucket_keys(reservation.entry.bucket)
        args = [
            reservation.member,
            reservation.need_tokens,
            "" if used_tokens is None else used_tokens,
            f"{reservation.redis_at:.6f}",
            reservation.probe_key or "",
            "1" if reservation.wakes else "0",
            self.link.channel,
            self.instance,
            "1" if reservation.succeeded else "0",
            scope_keys(reservation.entry)[2],
        ]
        finish_keys = [keys[2], keys[4], keys[6], keys[1], keys[0], keys[7]]
        if not reservation.settles and reservation.probe_key is None:
            # Nothing the next request is refused on changes: the answer need not
            # wait, and the finish rides with the next call to Redis.
            self.link.defer("finish", finish_keys, args)
            return
        with contextlib.suppress(StoreDown):  # its lease runs out by itself
            await self.link.script("finish", finish_keys, args)

    async def record_stream_end(
        self, entry: EntryRuntime, *, clean: bool, now: float, policy: CooldownPolicy
    ) -> Block | None:
        key = scope_keys(entry)[2]
        k = self._k
        try:
            failures = await self.link.script(
                "stream_end", [k("blocks"), k("probes"), k("streamfail")], [key, int(clean)]
            )
            rest_s = None if clean else policy.mid_stream_cooldown_s(int(failures))
            if rest_s is None:
                return None
            detail = f"{failures} streams in a row died mid-answer"
            args = [key, f"{rest_s:.6f}", BlockReason.UNSTABLE, "entry", "status", detail, "0"]
            keys = [k("blocks"), k("probes"), k("breakers")]
            reply = await self.link.script("block", keys, args)
        except StoreDown:
            if self.failure == "closed":
                return None
            return await self.local.record_stream_end(entry, clean=clean, now=now, policy=policy)
        return block_from(reply[1], self._clock(float(reply[0])))

    # -- clients' own limits -------------------------------------------------------

    async def reserve_client(
        self, client: ClientRuntime, need_tokens: int, now: float
    ) -> ClientReservation | Block:
        limits = client.limits
        if limits is None:
            return ClientReservation(client, need_tokens, now)
        member = f"{self.instance}:{next(self._ids)}"
        day_end = next_midnight(time.time() + self._offset, client.zone)
        args: list[object] = [
            member,
            need_tokens,
            0,  # no concurrency limit: the lease only counts it in flight
            limits.requests_per_minute or 0,
            limits.tokens_per_minute or 0,
            limits.requests_per_day or 0,
            limits.tokens_per_day or 0,
            f"{day_end:.6f}",
            f"{self.lease_s:.3f}",
            "1",
            # Scope keys no block, probe or pause is ever kept under (a provider id has no
            # `/`, an entry's model is never empty): a client is never cooled or paused.
            *([f"{client.bucket}/"] * 3),
        ]
        try:
            reply = await self.link.script("reserve", self._client_keys(client.name), args)
        except StoreDown:
            return await self._fallback().reserve_client(client, need_tokens, now)
        if reply[0] != "ok":
            return self._refusal(reply, limits, need_tokens)
        redis_now = float(reply[1])
        self._clock(redis_now)
        return _RedisClientReservation(
            client,
            need_tokens,
            now,
            member=member,
            redis_at=redis_now,
            settles=bool(limits.tokens_per_minute or limits.tokens_per_day),
        )

    async def finish_client(self, reservation: ClientReservation, used_tokens: int | None) -> None:
        if reservation.done:
            return
        if not isinstance(reservation, _RedisClientReservation):
            await self.local.finish_client(reservation, used_tokens)
            return
        reservation.done = True
        keys = self._client_keys(reservation.client.name)
        args = [
            reservation.member,
            reservation.need_tokens,
            "" if used_tokens is None else used_tokens,
            f"{reservation.redis_at:.6f}",
            "",  # no probe
            "0",  # nobody waits on a client's slot
            self.link.channel,
            self.instance,
            "0",  # no breaker to close
            reservation.client.bucket,
        ]
        finish_keys = [keys[2], keys[4], keys[6], keys[1], keys[0], keys[7]]
        if not reservation.settles:
            self.link.defer("finish", finish_keys, args)
            return
        with contextlib.suppress(StoreDown):  # its lease runs out by itself
            await self.link.script("finish", finish_keys, args)
