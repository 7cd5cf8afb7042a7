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

The memory store (memory_store.py) is the default; the shared store (redis_store.py)
implements the same protocol on Redis.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from chain429.routing.budget import BudgetCap, BudgetDay, Overdrawn, SpendHold
from chain429.routing.outcome import (
    BlockReason,
    CooldownPolicy,
    Outcome,
)
from chain429.routing.pauses import Pause
from chain429.routing.runtime import ClientRuntime, EntryRuntime

if TYPE_CHECKING:
    from chain429.routing.redis_store import RedisStateStore

log = logging.getLogger("chain429.routing.limits")

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

    def blocks_mark(self, entries: Sequence[EntryRuntime]) -> object | None:
        """A mark of the state the blocks just given for `entries` came from, or None
        when this store cannot tell a change (the shared store: another instance may
        change it at any time). See chain429.routing.known_skips."""

    def blocks_unchanged(self, mark: object) -> bool:
        """Whether nothing but time has changed what the blocks of a `blocks_mark` came
        from: each of those blocks holds, as it was given, until its `until`."""

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
