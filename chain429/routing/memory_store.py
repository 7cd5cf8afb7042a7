"""The memory store: the StateStore protocol (chain429.routing.limits) in this process.

The default: one process keeps every block, bucket, breaker, probe, pause,
client counter and paid budget in plain dicts, changed only on the event
loop, so each `reserve` is atomic without a lock. What must survive a
restart is exported as JSON-able rows (`export_state`, `import_state`) that
chain429.requestlog.persist keeps beside the request log. Several processes
share limits through the Redis store instead (redis_store.py), which falls
back to one of these while Redis is away.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast, get_args

from chain429.routing.buckets import Bucket
from chain429.routing.budget import BudgetCap, BudgetDay, MemoryLedger, Overdrawn, SpendHold
from chain429.routing.limits import (
    _SCOPE_PREFIXES,
    HALF_OPEN_DETAIL,
    Block,
    BlockScope,
    ClientReservation,
    Reservation,
    _names_provider,
    _scope_of,
    breaker_opened,
    overdrawn_block,
    paused_block,
    scope_keys,
)
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

log = logging.getLogger("chain429.routing.limits")

# Prefixes of the keys `export_state` gives (and `import_state` takes): one
# JSON-able dict per key, the rows chain429.requestlog.persist keeps in `provider_state`.
BLOCK_PREFIX = "block:"  # + a scope key: "block:bucket:groq/llama-3.3-70b"
BUCKET_PREFIX = "bucket:"  # + a bucket key
STREAMFAIL_PREFIX = "streamfail:"  # + an entry label
BREAKER_PREFIX = "breaker:"  # + an entry label: transient failures in a row
SPEND_PREFIX = "spend:"  # + a budget key: what the day's paid calls cost
CLIENT_PREFIX = "client:"  # + a client's name: its own counters (ClientRuntime.bucket)


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
        # Bumped by every change to blocks, probes, breakers, pauses or the set of
        # buckets: with each bucket's own version, what `blocks_mark` is made of.
        self.epoch = 0
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
                self.epoch += 1
            if key in self._probes:
                recovered = key
        return found, recovered

    def _pause_for(self, entry: EntryRuntime) -> Block | None:
        provider_key, _, entry_key = scope_keys(entry)
        pause = self._paused.find(provider_key, entry_key)
        return None if pause is None else paused_block(pause)

    def blocks_mark(self, entries: Sequence[EntryRuntime]) -> object:
        """What the blocks of `entries` were just computed from: `blocks_unchanged` says
        whether anything but time has changed since (see chain429.routing.known_skips)."""
        return (self.epoch, [(bucket, bucket.version) for bucket in map(self._bucket, entries)])

    def blocks_unchanged(self, mark: object) -> bool:
        epoch, buckets = cast(tuple[int, list[tuple[Bucket, int]]], mark)
        return epoch == self.epoch and all(b.version == v for b, v in buckets)

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
            self.epoch += 1
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
            self.epoch += 1
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
            self.epoch += 1
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
                self.epoch += 1
                block = self._blocks.get(key)
                if block is not None and block.reason == BlockReason.BREAKER:
                    del self._blocks[key]  # a success while open (a shared store's view)
            return None
        failures = self._breaker_failures.get(key, 0) + 1
        self._breaker_failures[key] = failures
        self.epoch += 1
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
        self.epoch += 1
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
            self.epoch += 1

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
        self.epoch += 1

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
        self.epoch += 1
        self._learnt()  # saved at once: a restart must not bring the cooldown back
        return cleared

    async def pause(self, key: str, by: str, now: float) -> tuple[Pause, bool]:
        pause, new = self._paused.add(key, by, now)
        if new:
            self.version += 1
            self.epoch += 1
            self._learnt()  # saved at once: a restart keeps it
        return pause, new

    async def resume(self, provider_id: str, model: str | None) -> int:
        ended = self._paused.remove(provider_id, model)
        if ended:
            self.version += 1
            self.epoch += 1
            self._learnt()
        return ended

    async def pauses(self) -> list[Pause]:
        return self._paused.all()

    def mirror_pauses(self, pauses: Sequence[Pause]) -> None:
        """Hold exactly these pauses: the shared store's copy, for when Redis is away."""
        self._paused = Pauses(pauses)
        self.epoch += 1

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
        self.epoch += 1
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
            bucket_key = key.removeprefix(BUCKET_PREFIX)
            return _absorb(self._buckets, bucket_key, bucket_key, data, now)
        if key.startswith(CLIENT_PREFIX):  # a client's bucket is keyed by its row's key
            return _absorb(self._clients, key.removeprefix(CLIENT_PREFIX), key, data, now)
        if key.startswith(STREAMFAIL_PREFIX):
            entry_key = "entry:" + key.removeprefix(STREAMFAIL_PREFIX)
            return _most_failures(self._stream_failures, entry_key, data)
        if key.startswith(BREAKER_PREFIX):
            entry_key = "entry:" + key.removeprefix(BREAKER_PREFIX)
            if not _most_failures(self._breaker_failures, entry_key, data):
                return False
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


def _absorb(
    buckets: dict[str, Bucket], name: str, key: str, data: Mapping[str, Any], now: float
) -> bool:
    """Restore a saved bucket as `buckets[name]`, merged into a live one (Bucket.absorb)."""
    restored = Bucket.from_dict(data, now)
    if restored.key != key:
        raise ValueError("bucket key does not match its row")
    current = buckets.get(name)
    if current is None:
        buckets[name] = restored
    else:
        current.absorb(restored)
    return True


def _most_failures(counts: dict[str, int], key: str, data: Mapping[str, Any]) -> bool:
    """Restore a saved count of failures in a row, keeping the larger; whether it was taken."""
    failures = int(data["failures"])
    if failures <= 0:
        return False
    counts[key] = max(counts.get(key, 0), failures)
    return True
