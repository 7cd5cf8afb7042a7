"""The entries a chain skips on every request, remembered from one request to the next.

A chain that leads with free entries known exhausted (a daily quota spent, a
paused key, a provider cooling down for an hour) skips the same entries on
every request until one of them recovers. Asking the state store about each,
and building each skip's trail step and its part of `X-429chain-Trace`, made
a request's cost grow with the chain: 19 skipped entries cost about as much
CPU as the request itself (bench/shape_bench.py). So the walk remembers the
leading run of skips it found (`KnownSkips`), and the next request takes
them as they are, in one check, while nothing but time could have changed
them:

- the state store says nothing changed (`StateStore.blocks_unchanged`: no
  block, probe, breaker or pause was set or cleared, no bucket of theirs was
  touched); the shared store never says so, since another instance may
  change Redis at any time, so there every entry is asked each time;
- none of their blocks has reached its `until`;
- the chain is the same object (a reload builds new ones), and the request's
  trail is empty (a walk again after a wait in the queue asks afresh).

Only skips that would be the same for any request are remembered
(`lasting`): not a concurrency slot (it frees when a request ends), not a
token bucket (it depends on the request's size), not a probe or a breaker
(their turn comes and goes within a second), not a budget (it depends on the
client), and not a paid entry or one whose cooldown may be waited for
(`shortWaitMs`): the walk decides those itself. One difference remains: a
bucket that refuses on its request count would, for a request large enough,
also refuse on a token reading asked first; the remembered skip names the
request count. The entry is skipped either way.

The steps are shared by every request that takes them: nothing may change
them once made (the trail's only later edit, continuation's, is on a call).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from chain429.requestlog.records import AttemptRecord
from chain429.routing.limits import Block, StateStore
from chain429.routing.outcome import BlockReason
from chain429.routing.runtime import ChainRuntime, EntryRuntime
from chain429.routing.trace import Trace

__all__ = ["KnownSkips", "lasting", "remember"]

# Blocks that are the same for every request until their `until` (or a change of state).
_LASTING = frozenset(
    {
        BlockReason.COOLDOWN,
        BlockReason.QUOTA,
        BlockReason.UNHEALTHY,
        BlockReason.UNSTABLE,
        BlockReason.LIMITED,
        BlockReason.PAUSED,
    }
)


@dataclass(frozen=True, slots=True)
class KnownSkips:
    """The first entries of a chain, known skipped: their steps, as one walk found them."""

    chain: ChainRuntime
    steps: tuple[AttemptRecord, ...]  # the trail's first steps, in order
    blocks: tuple[Block, ...]  # why each was skipped
    header: str  # their part of `X-429chain-Trace`
    until: float  # the earliest end of their blocks: then they are asked again
    earliest_recovery: float | None  # of their blocks (all free entries: of a free one too)
    mark: object  # the state store's `blocks_mark` when they were found

    def hold(self, chain: ChainRuntime, now: float, state: StateStore) -> bool:
        """Whether a walk of `chain` starting now would skip these entries just so."""
        return chain is self.chain and now < self.until and state.blocks_unchanged(self.mark)


def lasting(entry: EntryRuntime, block: Block, waitable: frozenset[BlockReason]) -> bool:
    """Whether skipping `entry` for `block` is what any request would do until its `until`."""
    if block.reason not in _LASTING or entry.paid:
        return False
    return not (entry.short_wait_s > 0 and block.reason in waitable)


def remember(
    chain: ChainRuntime, steps: Sequence[AttemptRecord], blocks: Sequence[Block], state: StateStore
) -> KnownSkips | None:
    """The chain's first `len(blocks)` entries, just skipped for `blocks` with these trail
    `steps`, as KnownSkips; None when the store cannot tell a change (the shared store)."""
    mark = state.blocks_mark(chain.entries[: len(blocks)])
    if mark is None:
        return None
    ends = [block.until for block in blocks]
    finite = [until for until in ends if math.isfinite(until)]  # a pause has no end
    return KnownSkips(
        chain=chain,
        steps=tuple(steps),
        blocks=tuple(blocks),
        header=Trace.header_of(steps),
        until=min(ends),
        earliest_recovery=min(finite) if finite else None,
        mark=mark,
    )
