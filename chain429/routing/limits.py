"""Which entries may be asked right now, behind one async interface.

The router asks `reserve` before each upstream call: either a `Block` (skip
the entry, and why) or a `Reservation` (go ahead; the unit it takes is already
counted, so concurrent requests never both take the last one). It reports the
answer with `record`, and `finish`es the reservation when the request is over
(for a stream, when the stream ends) with the tokens it really used.

A paid call under a paid budget first holds its estimated cost
(`hold_spend`, chain429.routing.budget); the hold rides on the reservation
and `finish` settles it with the call's cost (`settle_spend` settles one
that never got a reservation, or whose call failed).

State is kept per scope:
- a whole provider: a bad key (401/403), an empty wallet (402);
- a quota bucket (`EntryRuntime.bucket`): 429 cooldowns, header readings,
  configured limits; entries sharing a bucket are skipped together;
- one entry: an unknown model (404), streams that keep dying mid-answer, and
  its circuit breaker (transient failures in a row, `settings.breaker`).

When a cooldown ends, one request probes the entry before it takes traffic
again. An open breaker is a block like a cooldown, so its half-open state is
that same probe: concurrent requests skip (`skip:breaker`) until it answers.

A person may pause a provider or an entry (pauses.py): it is skipped
(`skip:paused`) before any other rule is asked, until resumed.

A client's own limits (`clients:`) are counted here too, before the walk:
`reserve_client` takes the request's unit from the client's bucket (or says
which limit it is over), `finish_client` swaps the token estimate for the
real count. They share the buckets' arithmetic and, in the shared store, its
scripts, so a client's requestsPerMinute holds across instances as an
entry's does.

The memory store is the default; the shared store (redis_store.py)
implements the same protocol on Redis.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast, get_args

from chain429.routing.buckets import Bucket
from chain429.routing.budget import BudgetCap, BudgetDay, MemoryLedger, Overdrawn, SpendHold
from chain429.routing.outcome import (
    SKIP_REASON,
    BlockReason,
    CooldownPolicy,
    Kind,
    Outcome,
    Scope,
)
from chain429.routing.pauses import PAUSED_PREFIX, Pause, Pauses
from chain429.routing.runtime import ClientRuntime, EntryRuntime
from chain429.upstream.dialects import (
    GENERIC,
    daily_exhausted,
    next_day_boundary,
    read_body,
    read_headers,
)

if TYPE_CHECKING:
    from chain429.routing.redis_store import RedisStateStore

log = logging.getLogger("chain429.routing.limits")

# Prefixes of the keys `export_state` gives (and `import_state` takes): one
# JSON-able dict per key, the rows chain429.requestlog.persist keeps in `provider_state`.
BLOCK_PREFIX = "block:"  # + a scope key: "block:bucket:groq/llama-3.3-70b"
BUCKET_PREFIX = "bucket:"  # + a bucket key
STREAMFAIL_PREFIX = "streamfail:"  # + an entry label
BREAKER_PREFIX = "breaker:"  # + an entry label: transient failures in a row
SPEND_PREFIX = "spend:"  # + a budget key: what the day's paid calls cost
CLIENT_PREFIX = "client:"  # + a client's name: its own counters (ClientRuntime.bucket)
_SCOPE_PREFIXES = ("provider:", "bucket:", "entry:")


BlockScope = Literal["provider", "bucket", "entry"]


def _scope_of(scope_key: str) -> BlockScope:
    """`bucket:groq/llama` -> "bucket": the scope a block key was made for."""
    if scope_key.startswith("provider:"):
        return "provider"
    return "bucket" if scope_key.startswith("bucket:") else "entry"


@dataclass(frozen=True, slots=True)
class Block:
    reason: BlockReason
    until: float  # epoch seconds; infinite for a pause (no recovery to wait for)
    scope: BlockScope
    detail: str = ""
    source: str = "status"  # what said so: status, header, body, default, manual, pause


def paused_block(pause: Pause) -> Block:
    """The block a pause puts on each entry it covers: no end, nothing to wait for."""
    return Block(BlockReason.PAUSED, math.inf, pause.scope, pause.describe(), "pause")


@dataclass(slots=True)
class Reservation:
    id: int
    entry: EntryRuntime
    need_tokens: int
    reserved_at: float
    probe_key: str | None = None  # set when this request probes a recovered scope
    done: bool = False
    spend: SpendHold | None = None  # a paid call's cost held against its budgets


def overdrawn_block(over: Overdrawn, now: float) -> Block:
    """The skip a paid budget that cannot take a call puts in the trace (`skip:budget`)."""
    return Block(BlockReason.BUDGET, over.until(now), "entry", over.detail, "budget")


@dataclass(slots=True)
class ClientReservation:
    """A request counted against its client's own limits; finished when it is over."""

    client: ClientRuntime
    need_tokens: int
    reserved_at: float
    done: bool = False


class StateStoreUnavailable(Exception):
    """The shared state store cannot be reached and `stateStoreFailure` is `closed`:
    the request is refused (503 `state_store_unavailable`) rather than served
    without the shared limits."""


class StateStore(Protocol):
    async def reserve(
        self, entry: EntryRuntime, need_tokens: int, now: float
    ) -> Reservation | Block:
        """Atomically: a Block if the entry may not be asked now, else a Reservation."""

    async def record(
        self,
        reservation: Reservation,
        outcome: Outcome,
        headers: Mapping[str, str],
        body: bytes,
        now: float,
        policy: CooldownPolicy,
    ) -> Block | None:
        """Learn from an answer; returns the block it put in force, if any."""

    async def finish(
        self, reservation: Reservation, used_tokens: int | None, cost_usd: float | None = None
    ) -> None:
        """The request is over: free its slot, count its real tokens, settle its spend hold
        with `cost_usd` (None: unknown, the estimate held is charged)."""

    async def hold_spend(
        self, caps: Sequence[BudgetCap], amount_usd: float, day: BudgetDay, now: float
    ) -> SpendHold | Block:
        """Atomically: hold `amount_usd` against every budget of `caps`, or `skip:budget`."""

    async def settle_spend(self, hold: SpendHold, cost_usd: float) -> None:
        """Replace a hold by what its call cost (0: the call failed). Once per hold."""

    async def spend_report(
        self, caps: Sequence[BudgetCap], day: BudgetDay, now: float
    ) -> list[dict[str, Any]]:
        """Each budget's state for `day` (`chain429.routing.budget.budget_state`)."""

    async def check(self, entry: EntryRuntime, now: float) -> Block | None:
        """The block in force for this entry, without reserving anything."""

    async def record_stream_end(
        self, entry: EntryRuntime, *, clean: bool, now: float, policy: CooldownPolicy
    ) -> Block | None:
        """Count a stream that died after its first token (or reset the count on a clean one)."""

    async def snapshot(self, now: float) -> list[dict[str, object]]:
        """Every block still in force."""

    async def breaker(self, entry: EntryRuntime, now: float) -> dict[str, object]:
        """The entry's circuit breaker: `state` (closed, open, half_open), `failures` (transient
        failures in a row), `until` (epoch seconds, while open) and `reason`."""

    async def bucket_quotas(self, entry: EntryRuntime, now: float) -> list[dict[str, object]]:
        """What the entry's bucket knows of its quotas, for /v1/ratelimits."""

    async def in_flight(self, entry: EntryRuntime) -> int:
        """Requests holding a slot of the entry's bucket (on every instance, if shared)."""

    async def forget_provider(self, provider_id: str) -> None:
        """Drop everything known about a provider (removed, or its URL or key changed)."""

    async def clear(self, provider_id: str, entries: Sequence[EntryRuntime], now: float) -> int:
        """End the blocks in force on these entries' scopes (entry, bucket, provider), or
        with no entries every block of the provider; how many ended. A person's call
        (`POST /v1/admin/limits/clear`): the entries are asked at once, without a probe.
        Pauses are not blocks: a clear leaves them."""

    # A person's pauses (pauses.py): pause a provider or an entry (`pause_key`), keeping an
    # earlier pause (the pause in force, and whether it is new); end those of an entry, or
    # of a provider and its entries (how many); list every pause in force, by key.
    async def pause(self, key: str, by: str, now: float) -> tuple[Pause, bool]: ...

    async def resume(self, provider_id: str, model: str | None) -> int: ...

    async def pauses(self) -> list[Pause]: ...

    async def reserve_client(
        self, client: ClientRuntime, need_tokens: int, now: float
    ) -> ClientReservation | Block:
        """Atomically: a Block naming the client's own limit it is over (its `detail`), else
        a reservation that counts this request (and its estimated tokens) against them."""

    async def finish_client(self, reservation: ClientReservation, used_tokens: int | None) -> None:
        """The request is over: count the tokens it really used (None: keep the estimate)."""

    async def client_quotas(self, client: ClientRuntime, now: float) -> list[dict[str, object]]:
        """The client's own limits with what is left of each (Bucket.describe's shape)."""


class StoreDown(Exception):
    """A shared store cannot be used right now (its breaker is open, or this call just failed)."""


def shared_store(store: StateStore) -> RedisStateStore | None:
    """The store as the shared (Redis) store, or None for this process's memory.

    Asked without importing the Redis store: a process that keeps its limits in
    memory never loads the redis package (7 MB of resident memory).
    """
    module = sys.modules.get("chain429.routing.redis_store")
    if module is not None and isinstance(store, module.RedisStateStore):
        return cast("RedisStateStore", store)
    return None


def scope_keys(entry: EntryRuntime) -> tuple[str, str, str]:
    return (f"provider:{entry.provider_id}", f"bucket:{entry.bucket}", f"entry:{entry.label}")


def _names_provider(name: str, provider_id: str) -> bool:
    """Whether a scope's name ("groq", "groq/llama-3", "groq/*") belongs to the provider."""
    return name == provider_id or name.startswith(f"{provider_id}/")


def breaker_opened(
    entry: EntryRuntime, failures: int, outcome: Outcome, now: float, open_s: float
) -> Block:
    """The block an entry's breaker puts in force when it opens (and says so, once)."""
    detail = f"{failures} transient failures in a row (last: {outcome.token})"
    log.warning("%s: circuit breaker open for %.0f s (%s)", entry.label, open_s, detail)
    return Block(BlockReason.BREAKER, now + open_s, "entry", detail)


# What a request finds while one request probes a half-open breaker.
HALF_OPEN_DETAIL = "half-open: one request is probing the entry"


def _jittered(now: float, until: float) -> float:
    # Entries that cooled down together should not all come back in the same
    # instant: up to 5% later, at most 2 s.
    return until + random.uniform(0.0, min(2.0, 0.05 * max(0.0, until - now)))


class MemoryStateStore:
    """Process-local state; the single-instance default."""

    def __init__(self) -> None:
        self._blocks: dict[str, Block] = {}
        self._buckets: dict[str, Bucket] = {}
        # scope key -> id of the probing reservation, or None: the next request probes.
        self._probes: dict[str, int | None] = {}
        self._stream_failures: dict[str, int] = {}
        # Entry key -> transient failures in a row; and the entries whose breaker has
        # opened and not yet closed (a success or any non-transient answer closes it).
        self._breaker_failures: dict[str, int] = {}
        self._breakers_open: set[str] = set()
        self._paused = Pauses()
        self._clients: dict[str, Bucket] = {}  # a client's name -> its own counters
        self._ids = itertools.count(1)
        self.ledger = MemoryLedger()  # paid budgets: the day's spend, calls' holds
        # Bumped by every call that may change what `export_state` gives, so the
        # persister writes only when there is something new. Only counts: the
        # request path pays one integer add.
        self.version = 0
        # Called (on the event loop, without waiting) when a provider has just
        # told us something a restart must not forget: a new block (a cooldown,
        # a quota gone, a bad key) or a request quota read at zero. The persister
        # sets it to wake its saver at once instead of at its next tick.
        self.on_learnt: Callable[[], None] | None = None

    def _bucket(self, entry: EntryRuntime) -> Bucket:
        bucket = self._buckets.get(entry.bucket)
        if bucket is None:
            bucket = self._buckets[entry.bucket] = Bucket(entry.bucket, entry.dialect)
        return bucket

    def _block_for(self, entry: EntryRuntime, now: float) -> tuple[Block | None, str | None]:
        """The block in force, and a scope key whose cooldown just ended (needs a probe)."""
        found: Block | None = None
        recovered: str | None = None
        for key in scope_keys(entry):
            block = self._blocks.get(key)
            if block is not None:
                if block.until > now:
                    if found is None or block.until > found.until:
                        found = block
                    continue
                del self._blocks[key]
                self._probes[key] = None
            if key in self._probes:
                recovered = key
        return found, recovered

    def _pause_for(self, entry: EntryRuntime) -> Block | None:
        provider_key, _, entry_key = scope_keys(entry)
        pause = self._paused.find(provider_key, entry_key)
        return None if pause is None else paused_block(pause)

    async def check(self, entry: EntryRuntime, now: float) -> Block | None:
        paused = self._pause_for(entry)
        if paused is not None:
            return paused
        block, _ = self._block_for(entry, now)
        if block is not None:
            return block
        refusal = self._bucket(entry).refusal(entry.limits, 0, now)
        if refusal is None:
            return None
        return Block(refusal.reason, refusal.until, "bucket", refusal.detail, refusal.source)

    async def reserve(
        self, entry: EntryRuntime, need_tokens: int, now: float
    ) -> Reservation | Block:
        paused = self._pause_for(entry)
        if paused is not None:
            return paused
        block, recovered = self._block_for(entry, now)
        if block is not None:
            return block
        if recovered is not None and self._probes[recovered] is not None:
            if recovered in self._breakers_open:
                return Block(
                    BlockReason.BREAKER,
                    now + 1.0,
                    "entry",
                    HALF_OPEN_DETAIL,
                )
            return Block(
                BlockReason.PROBING,
                now + 1.0,
                _scope_of(recovered),
                "one request is probing the recovered entry",
            )
        bucket = self._bucket(entry)
        refusal = bucket.refusal(entry.limits, need_tokens, now)
        if refusal is not None:
            return Block(refusal.reason, refusal.until, "bucket", refusal.detail, refusal.source)
        bucket.reserve(need_tokens, now, entry.limits)
        reservation = Reservation(next(self._ids), entry, need_tokens, now)
        if recovered is not None:
            self._probes[recovered] = reservation.id
            reservation.probe_key = recovered
        return reservation

    async def record(
        self,
        reservation: Reservation,
        outcome: Outcome,
        headers: Mapping[str, str],
        body: bytes,
        now: float,
        policy: CooldownPolicy,
    ) -> Block | None:
        self.version += 1
        entry = reservation.entry
        bucket = self._bucket(entry)
        readings = read_headers(entry.dialect, headers, now=now)
        if outcome.kind is Kind.RATE_LIMITED:
            readings += read_body(entry.dialect, body, now=now)
        bucket.observe(readings, now)
        if any(r.kind == "requests" and r.remaining == 0 for r in readings):
            self._learnt()  # a quota gone, said on an answer that may still be a 200
        if reservation.probe_key is not None and outcome.kind is not Kind.RATE_LIMITED:
            # Success or not, the probe is answered; a new cooldown brings a new probe.
            self._probes.pop(reservation.probe_key, None)
            reservation.probe_key = None
        broken = self._count_for_breaker(entry, outcome, now, policy)
        if broken is not None:
            return broken
        if outcome.kind is Kind.SUCCESS:
            bucket.strikes = 0
            return None
        reason = SKIP_REASON.get(outcome.kind)
        if reason is None or outcome.until is None:
            return None
        provider_key, bucket_key, entry_key = scope_keys(entry)
        scope: BlockScope = "entry"
        until, key = outcome.until, entry_key
        if outcome.kind is Kind.RATE_LIMITED:
            key, scope = bucket_key, "bucket"
            bucket.strikes += 1
            daily = daily_exhausted(entry.dialect, outcome.status or 429, headers, body, now=now)
            if daily is not None:
                until = daily
            else:
                # The same quota saying no again: back off harder, but never past
                # the provider's next day, when every quota refills.
                until = now + (until - now) * 2 ** min(bucket.strikes - 1, 16)
                until = min(until, max(outcome.until, next_day_boundary(entry.dialect, now)))
        elif outcome.scope is Scope.PROVIDER:
            key, scope = provider_key, "provider"
        if reservation.probe_key is not None:
            self._probes.pop(reservation.probe_key, None)
            reservation.probe_key = None
        block = Block(reason, _jittered(now, until), scope, outcome.reason, outcome.source)
        return self._block(key, block)

    def _count_for_breaker(
        self, entry: EntryRuntime, outcome: Outcome, now: float, policy: CooldownPolicy
    ) -> Block | None:
        """Count a transient failure (or close the breaker on any other answer); the
        breaker's block when this failure opens it (or opens it again, longer)."""
        key = scope_keys(entry)[2]
        if outcome.kind is not Kind.TRANSIENT:
            if self._breaker_failures.pop(key, None) is not None:
                self._breakers_open.discard(key)
                block = self._blocks.get(key)
                if block is not None and block.reason == BlockReason.BREAKER:
                    del self._blocks[key]  # a success while open (a shared store's view)
            return None
        failures = self._breaker_failures.get(key, 0) + 1
        self._breaker_failures[key] = failures
        open_s = policy.breaker_open_s(failures)
        if open_s is None:
            return None
        self._breakers_open.add(key)
        return self._block(key, breaker_opened(entry, failures, outcome, now, open_s))

    async def breaker(self, entry: EntryRuntime, now: float) -> dict[str, object]:
        key = scope_keys(entry)[2]
        failures = self._breaker_failures.get(key, 0)
        if key not in self._breakers_open:
            return {"state": "closed", "failures": failures, "until": None, "reason": None}
        block = self._blocks.get(key)
        if block is not None and block.reason == BlockReason.BREAKER and block.until > now:
            return {
                "state": "open",
                "failures": failures,
                "until": block.until,
                "reason": block.detail,
            }
        return {
            "state": "half_open",
            "failures": failures,
            "until": None,
            "reason": f"{failures} transient failures in a row; the next request probes it",
        }

    def _block(self, key: str, block: Block) -> Block:
        current = self._blocks.get(key)
        # A new cooldown never shortens a longer one already in force.
        if current is not None and current.until >= block.until:
            return current
        self._blocks[key] = block
        self._probes.pop(key, None)
        self._learnt()
        return block

    def _learnt(self) -> None:
        if self.on_learnt is not None:
            self.on_learnt()

    async def finish(
        self, reservation: Reservation, used_tokens: int | None, cost_usd: float | None = None
    ) -> None:
        if reservation.done:
            return
        reservation.done = True
        if reservation.spend is not None:
            hold = reservation.spend
            await self.settle_spend(hold, hold.amount_usd if cost_usd is None else cost_usd)
        self.version += 1  # the day's token count may have changed
        self._bucket(reservation.entry).finish(
            reservation.reserved_at, reservation.need_tokens, used_tokens
        )
        if (
            reservation.probe_key is not None
            and self._probes.get(reservation.probe_key) == reservation.id
        ):
            self._probes[reservation.probe_key] = None  # cancelled probe: the next request probes

    async def hold_spend(
        self, caps: Sequence[BudgetCap], amount_usd: float, day: BudgetDay, now: float
    ) -> SpendHold | Block:
        held = self.ledger.hold(caps, amount_usd, day)
        return overdrawn_block(held, now) if isinstance(held, Overdrawn) else held

    async def settle_spend(self, hold: SpendHold, cost_usd: float) -> None:
        if not hold.done and cost_usd > 0:
            self.version += 1
            self._learnt()  # money spent: saved at once, a crash must not forget it
        self.ledger.settle(hold, cost_usd)

    async def spend_report(
        self, caps: Sequence[BudgetCap], day: BudgetDay, now: float
    ) -> list[dict[str, Any]]:
        return self.ledger.report(caps, day)

    async def record_stream_end(
        self, entry: EntryRuntime, *, clean: bool, now: float, policy: CooldownPolicy
    ) -> Block | None:
        self.version += 1
        key = scope_keys(entry)[2]
        if clean:
            self._stream_failures.pop(key, None)
            return None
        failures = self._stream_failures.get(key, 0) + 1
        self._stream_failures[key] = failures
        rest_s = policy.mid_stream_cooldown_s(failures)
        if rest_s is None:
            return None
        detail = f"{failures} streams in a row died mid-answer"
        return self._block(key, Block(BlockReason.UNSTABLE, now + rest_s, "entry", detail))

    async def snapshot(self, now: float) -> list[dict[str, object]]:
        return [
            {
                "key": key,
                "scope": block.scope,
                "reason": block.reason,
                "detail": block.detail,
                "source": block.source,
                "until": block.until,
                "remaining_ms": int((block.until - now) * 1000),
            }
            for key, block in sorted(self._blocks.items())
            if block.until > now
        ]

    async def bucket_quotas(self, entry: EntryRuntime, now: float) -> list[dict[str, object]]:
        return self._bucket(entry).describe(entry.limits, now)

    async def in_flight(self, entry: EntryRuntime) -> int:
        return self._bucket(entry).in_flight

    async def forget_provider(self, provider_id: str) -> None:
        prefix = f"{provider_id}/"
        for key in list(self._blocks):
            _, _, name = key.partition(":")
            if name == provider_id or name.startswith(prefix):
                del self._blocks[key]
                self._probes.pop(key, None)
        for key in [k for k in self._probes if k.partition(":")[2].startswith(prefix)]:
            del self._probes[key]
        for key in [k for k in self._buckets if k.startswith(prefix)]:
            del self._buckets[key]
        for key in [k for k in self._stream_failures if k.partition(":")[2].startswith(prefix)]:
            del self._stream_failures[key]
        for key in [k for k in self._breaker_failures if k.partition(":")[2].startswith(prefix)]:
            del self._breaker_failures[key]
            self._breakers_open.discard(key)
        self.version += 1

    async def clear(self, provider_id: str, entries: Sequence[EntryRuntime], now: float) -> int:
        if entries:
            keys = {key for entry in entries for key in scope_keys(entry)}
        else:
            keys = {k for k in self._blocks if _names_provider(k.partition(":")[2], provider_id)}
        cleared = 0
        for key in keys:
            block = self._blocks.pop(key, None)
            self._probes.pop(key, None)
            if block is not None and block.until > now:
                cleared += 1
            # Start over: no doubled back-off on the next 429, no count of dead streams.
            self._stream_failures.pop(key, None)
            self._breaker_failures.pop(key, None)
            self._breakers_open.discard(key)
            bucket = self._buckets.get(key.removeprefix("bucket:"))
            if key.startswith("bucket:") and bucket is not None:
                bucket.strikes = 0
        self.version += 1
        self._learnt()  # saved at once: a restart must not bring the cooldown back
        return cleared

    async def pause(self, key: str, by: str, now: float) -> tuple[Pause, bool]:
        pause, new = self._paused.add(key, by, now)
        if new:
            self.version += 1
            self._learnt()  # saved at once: a restart keeps it
        return pause, new

    async def resume(self, provider_id: str, model: str | None) -> int:
        ended = self._paused.remove(provider_id, model)
        if ended:
            self.version += 1
            self._learnt()
        return ended

    async def pauses(self) -> list[Pause]:
        return self._paused.all()

    def mirror_pauses(self, pauses: Sequence[Pause]) -> None:
        """Hold exactly these pauses: the shared store's copy, for when Redis is away."""
        self._paused = Pauses(pauses)

    # -- clients' own limits ---------------------------------------------------

    def _client_bucket(self, client: ClientRuntime) -> Bucket:
        bucket = self._clients.get(client.name)
        if bucket is None:
            bucket = self._clients[client.name] = Bucket(client.bucket, GENERIC)
        bucket.zone = client.zone  # settings.timeZone may have changed on a reload
        return bucket

    async def reserve_client(
        self, client: ClientRuntime, need_tokens: int, now: float
    ) -> ClientReservation | Block:
        if client.limits is None:  # nothing to count against
            return ClientReservation(client, need_tokens, now)
        bucket = self._client_bucket(client)
        refusal = bucket.refusal(client.limits, need_tokens, now)
        if refusal is not None:
            return Block(refusal.reason, refusal.until, "bucket", refusal.detail, refusal.source)
        bucket.reserve(need_tokens, now, client.limits)
        self.version += 1
        return ClientReservation(client, need_tokens, now)

    async def finish_client(self, reservation: ClientReservation, used_tokens: int | None) -> None:
        if reservation.done:
            return
        reservation.done = True
        if reservation.client.limits is None:
            return
        self.version += 1
        bucket = self._client_bucket(reservation.client)
        bucket.finish(reservation.reserved_at, reservation.need_tokens, used_tokens)

    async def client_quotas(self, client: ClientRuntime, now: float) -> list[dict[str, object]]:
        if client.limits is None:
            return []
        return self._client_bucket(client).describe(client.limits, now)

    # -- surviving a restart ---------------------------------------------------
    #
    # Saved: blocks in force, buckets' live state (see Bucket.to_dict) and
    # clients' (their day's counts: a restart must not hand out a new day),
    # streams that died in a row, breakers' failure counts (an open breaker's
    # interval is its block, saved with the blocks), the day's paid spend per
    # budget, pauses. Not saved: probes, in-flight counts and spend holds, which
    # belong to requests of the process that stopped. A restored block that has
    # ended by the time it is next asked about brings its probe like any other.

    def export_state(self, now: float) -> dict[str, dict[str, Any]]:
        """Everything live, one JSON-able dict per key (BLOCK_/BUCKET_/STREAMFAIL_/BREAKER_/
        PAUSED_PREFIX)."""
        items: dict[str, dict[str, Any]] = {}
        for key, block in self._blocks.items():
            if block.until > now:
                items[BLOCK_PREFIX + key] = {
                    "reason": block.reason,
                    "until": block.until,
                    "scope": block.scope,
                    "detail": block.detail,
                    "source": block.source,
                }
        for key, bucket in self._buckets.items():
            data = bucket.to_dict(now)
            if data is not None:
                items[BUCKET_PREFIX + key] = data
        for name, bucket in self._clients.items():
            data = bucket.to_dict(now)
            if data is not None:
                items[CLIENT_PREFIX + name] = data
        for key, failures in self._stream_failures.items():
            if failures > 0:
                items[STREAMFAIL_PREFIX + key.removeprefix("entry:")] = {"failures": failures}
        for key, failures in self._breaker_failures.items():
            items[BREAKER_PREFIX + key.removeprefix("entry:")] = {
                "failures": failures,
                "open": key in self._breakers_open,
            }
        for key, data in self.ledger.export(now).items():
            items[SPEND_PREFIX + key] = data
        items.update(self._paused.export())
        return items

    def import_state(self, items: Mapping[str, Mapping[str, Any]], now: float) -> int:
        """Restore `export_state` items; returns how many were taken.

        Expired items are skipped, a block never shortens one already in force,
        and a malformed item is skipped (logged) without stopping the rest.
        """
        taken = 0
        for key, data in items.items():
            try:
                taken += self._import_item(key, data, now)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("saved rate-limit state %r ignored: %s", key, exc)
        return taken

    def _import_item(self, key: str, data: Mapping[str, Any], now: float) -> bool:
        if key.startswith(BLOCK_PREFIX):
            scope_key = key.removeprefix(BLOCK_PREFIX)
            if not scope_key.startswith(_SCOPE_PREFIXES):
                raise ValueError("unknown scope")
            until = float(data["until"])
            if until <= now:
                return False
            scope = data["scope"]
            if scope not in get_args(BlockScope):
                raise ValueError("unknown scope")
            block = Block(
                BlockReason(data["reason"]),  # ValueError for a reason this version lacks
                until,
                scope,
                str(data.get("detail", "")),
                str(data.get("source", "status")),
            )
            self._block(scope_key, block)
            return True
        if key.startswith(BUCKET_PREFIX):
            restored = Bucket.from_dict(data, now)
            if restored.key != key.removeprefix(BUCKET_PREFIX):
                raise ValueError("bucket key does not match its row")
            current = self._buckets.get(restored.key)
            if current is None:
                self._buckets[restored.key] = restored
            else:
                current.absorb(restored)
            return True
        if key.startswith(CLIENT_PREFIX):
            restored = Bucket.from_dict(data, now)
            if restored.key != key:
                raise ValueError("client key does not match its row")
            name = key.removeprefix(CLIENT_PREFIX)
            current = self._clients.get(name)
            if current is None:
                self._clients[name] = restored
            else:
                current.absorb(restored)
            return True
        if key.startswith(STREAMFAIL_PREFIX):
            entry_key = "entry:" + key.removeprefix(STREAMFAIL_PREFIX)
            failures = int(data["failures"])
            if failures <= 0:
                return False
            known = self._stream_failures.get(entry_key, 0)
            self._stream_failures[entry_key] = max(known, failures)
            return True
        if key.startswith(BREAKER_PREFIX):
            entry_key = "entry:" + key.removeprefix(BREAKER_PREFIX)
            failures = int(data["failures"])
            if failures <= 0:
                return False
            known = self._breaker_failures.get(entry_key, 0)
            self._breaker_failures[entry_key] = max(known, failures)
            if data.get("open") is True:
                self._breakers_open.add(entry_key)
                if entry_key not in self._blocks:
                    # Its interval ended while we were down: the next request probes it.
                    self._probes[entry_key] = None
            return True
        if key.startswith(SPEND_PREFIX):
            return self.ledger.restore(key.removeprefix(SPEND_PREFIX), data, now)
        if key.startswith(PAUSED_PREFIX):
            return self._paused.restore(key.removeprefix(PAUSED_PREFIX), data)
        raise ValueError("unknown kind of state")
