"""Which entries may be asked right now, behind one async interface.

The router asks `reserve` before each upstream call: either a `Block` (skip
the entry, and why) or a `Reservation` (go ahead; the unit it takes is already
counted, so concurrent requests never both take the last one). It reports the
answer with `record`, and `finish`es the reservation when the request is over
(for a stream, when the stream ends) with the tokens it really used.

State is kept per scope:
- a whole provider: a bad key (401/403), an empty wallet (402);
- a quota bucket (`EntryRuntime.bucket`): 429 cooldowns, header readings,
  configured limits; entries sharing a bucket are skipped together;
- one entry: an unknown model (404), streams that keep dying mid-answer.

When a cooldown ends, one request probes the entry before it takes traffic
again. The memory store is the default; a shared store (Redis) implements the
same protocol.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from chain429.buckets import Bucket
from chain429.dialects import daily_exhausted, next_day_boundary, read_body, read_headers
from chain429.outcome import SKIP_REASON, CooldownPolicy, Kind, Outcome, Scope
from chain429.runtime import EntryRuntime

# Reasons a skip can give, as the trace shows them (`skip:<reason>`).
PROBING = "probing"


@dataclass(frozen=True, slots=True)
class Block:
    reason: str  # cooldown, quota, unhealthy, unstable, limited, tokens, concurrency, probing
    until: float  # epoch seconds
    scope: str  # "provider", "bucket" or "entry"
    detail: str = ""
    source: str = "status"  # what said so: status, header, body, manual


@dataclass(slots=True)
class Reservation:
    id: int
    entry: EntryRuntime
    need_tokens: int
    reserved_at: float
    probe_key: str | None = None  # set when this request probes a recovered scope
    done: bool = False


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

    async def finish(self, reservation: Reservation, used_tokens: int | None) -> None:
        """The request is over: free its slot, count its real tokens."""

    async def check(self, entry: EntryRuntime, now: float) -> Block | None:
        """The block in force for this entry, without reserving anything."""

    async def record_stream_end(
        self, entry: EntryRuntime, *, clean: bool, now: float, policy: CooldownPolicy
    ) -> Block | None:
        """Count a stream that died after its first token (or reset the count on a clean one)."""

    async def snapshot(self, now: float) -> list[dict[str, object]]:
        """Every block still in force."""

    def bucket_quotas(self, entry: EntryRuntime, now: float) -> list[dict[str, object]]:
        """What the entry's bucket knows of its quotas, for /v1/ratelimits."""

    def in_flight(self, entry: EntryRuntime) -> int: ...


def scope_keys(entry: EntryRuntime) -> tuple[str, str, str]:
    return (f"provider:{entry.provider_id}", f"bucket:{entry.bucket}", f"entry:{entry.label}")


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
        self._ids = itertools.count(1)

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

    async def check(self, entry: EntryRuntime, now: float) -> Block | None:
        block, _ = self._block_for(entry, now)
        return block

    async def reserve(
        self, entry: EntryRuntime, need_tokens: int, now: float
    ) -> Reservation | Block:
        block, recovered = self._block_for(entry, now)
        if block is not None:
            return block
        if recovered is not None and self._probes[recovered] is not None:
            return Block(
                PROBING,
                now + 1.0,
                recovered.split(":", 1)[0],
                "one request is probing the recovered entry",
            )
        bucket = self._bucket(entry)
        refusal = bucket.refusal(entry.limits, need_tokens, now)
        if refusal is not None:
            return Block(refusal.reason, refusal.until, "bucket", refusal.detail, refusal.source)
        bucket.reserve(need_tokens, now)
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
        entry = reservation.entry
        bucket = self._bucket(entry)
        readings = read_headers(entry.dialect, headers, now=now)
        if outcome.kind is Kind.RATE_LIMITED:
            readings += read_body(entry.dialect, body, now=now)
        bucket.observe(readings, now)
        if reservation.probe_key is not None and outcome.kind is not Kind.RATE_LIMITED:
            # Success or not, the probe is answered; a new cooldown brings a new probe.
            self._probes.pop(reservation.probe_key, None)
            reservation.probe_key = None
        if outcome.kind is Kind.SUCCESS:
            bucket.strikes = 0
            return None
        reason = SKIP_REASON.get(outcome.kind)
        if reason is None or outcome.until is None:
            return None
        provider_key, bucket_key, entry_key = scope_keys(entry)
        until, key, scope = outcome.until, entry_key, "entry"
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

    def _block(self, key: str, block: Block) -> Block:
        current = self._blocks.get(key)
        # A new cooldown never shortens a longer one already in force.
        if current is not None and current.until >= block.until:
            return current
        self._blocks[key] = block
        self._probes.pop(key, None)
        return block

    async def finish(self, reservation: Reservation, used_tokens: int | None) -> None:
        if reservation.done:
            return
        reservation.done = True
        self._bucket(reservation.entry).finish(
            reservation.reserved_at, reservation.need_tokens, used_tokens
        )
        if (
            reservation.probe_key is not None
            and self._probes.get(reservation.probe_key) == reservation.id
        ):
            self._probes[reservation.probe_key] = None  # cancelled probe: the next request probes

    async def record_stream_end(
        self, entry: EntryRuntime, *, clean: bool, now: float, policy: CooldownPolicy
    ) -> Block | None:
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
        return self._block(key, Block("unstable", now + rest_s, "entry", detail))

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

    def bucket_quotas(self, entry: EntryRuntime, now: float) -> list[dict[str, object]]:
        return self._bucket(entry).describe(entry.limits, now)

    def in_flight(self, entry: EntryRuntime) -> int:
        return self._bucket(entry).in_flight

    def probing(self, entry: EntryRuntime) -> bool:
        return any(self._probes.get(key) is not None for key in scope_keys(entry))
