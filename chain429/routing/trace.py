"""A request's attempt trail: what happened to each entry considered, in chain order.

The walk writes it as it goes (a skip and its block, a call and its outcome,
the call budget running out), and it keeps what queue mode and the 503 need to
know: the earliest recovery seen (of any entry, and of a free one), and whether
every failure was a rate limit with a known end. The request log stores the
trail; the answer carries it in `X-429chain-Trace` and `X-429chain-Attempts`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chain429.requestlog.records import AttemptRecord, is_call
from chain429.routing.limits import Block, Reservation
from chain429.routing.outcome import BlockReason, Outcome
from chain429.routing.runtime import EntryRuntime

if TYPE_CHECKING:
    from chain429.routing.known_skips import KnownSkips

__all__ = ["Trace"]


@dataclass(slots=True)
class Trace:
    """What happened to each entry considered, in chain order: the attempt trail."""

    trail: list[AttemptRecord] = field(default_factory=list)
    earliest_recovery: float | None = None
    free_recovery: float | None = None  # the earliest recovery of a free (not paid) entry
    queued_ms: float = 0.0  # time spent waiting in the queue for an entry to recover
    # False once an entry failed for a reason with no known recovery (5xx, timeout):
    # then waiting in the queue would be a guess, so the answer is a 503 at once.
    only_rate_limits: bool = True
    # Reservations of entries that answered: the caller finishes them with the
    # real token count once the answer (or the stream) is over.
    open: list[Reservation] = field(default_factory=list)
    # The chain's first entries, skipped as a previous request found them (known_skips.py).
    known: KnownSkips | None = None
    # What a call the client cut off (it left, or gave up) may have cost, its estimate:
    # the request log's cost when no usage says more.
    cut_off_usd: float | None = None

    def take_known(self, known: KnownSkips) -> None:
        """Start the trail with skips already known, as if this walk had made them."""
        self.trail.extend(known.steps)
        self.known = known
        if known.earliest_recovery is not None:  # known skips are all of free entries
            self._recovers(known.earliest_recovery, free=True)

    def skip(self, entry: EntryRuntime, block: Block) -> None:
        self.trail.append(
            AttemptRecord(
                len(self.trail) + 1,
                entry.provider_id,
                entry.model,
                f"skip:{block.reason}",
                reason=block.detail,
            )
        )
        self.saw_recovery(block.until, entry)

    def called(
        self, entry: EntryRuntime, outcome: Outcome, latency_ms: float, applied: Block | None
    ) -> None:
        if outcome.falls_through and outcome.until is None:
            self.only_rate_limits = False
        cooldown_ms = None
        if applied is not None:
            self.saw_recovery(applied.until, entry)
            cooldown_ms = max(0, int((applied.until - time.time()) * 1000))
        self.trail.append(
            AttemptRecord(
                len(self.trail) + 1,
                entry.provider_id,
                entry.model,
                outcome.token,
                outcome.status,
                round(latency_ms, 3),
                cooldown_ms,
                outcome.reason,
            )
        )

    def saw_recovery(self, until: float, entry: EntryRuntime) -> None:
        if math.isfinite(until):  # a pause has no end to wait for
            self._recovers(until, free=not entry.paid)

    def _recovers(self, until: float, free: bool) -> None:
        if self.earliest_recovery is None or until < self.earliest_recovery:
            self.earliest_recovery = until
        if free and (self.free_recovery is None or until < self.free_recovery):
            self.free_recovery = until

    def over_budget(self, entry: EntryRuntime, budget: int) -> None:
        """The entry was not asked: the walk had made its `maxAttemptsPerRequest` calls.
        No recovery is known for that, so the request will not queue for it."""
        self.only_rate_limits = False
        self.trail.append(
            AttemptRecord(
                len(self.trail) + 1,
                entry.provider_id,
                entry.model,
                f"skip:{BlockReason.BUDGET}",
                reason=f"{budget} upstream calls made (maxAttemptsPerRequest)",
            )
        )

    def _after_known(self) -> list[AttemptRecord]:
        return self.trail if self.known is None else self.trail[len(self.known.steps) :]

    @property
    def calls(self) -> int:
        """Upstream calls made: every step of the trail that stands for one."""
        return sum(1 for a in self._after_known() if is_call(a.outcome))  # known: skips

    @staticmethod
    def header_of(steps: Sequence[AttemptRecord]) -> str:
        """`X-429chain-Trace` for these steps: `provider/model=outcome`, comma-separated."""
        return ",".join(f"{a.provider}/{a.model}={a.outcome}" for a in steps)

    def header(self) -> str:
        if self.known is None:
            return self.header_of(self.trail)
        rest = self._after_known()
        return f"{self.known.header},{self.header_of(rest)}" if rest else self.known.header

    def headers(self, answered_by: str | None) -> dict[str, str]:
        headers = {"X-429chain-Attempts": str(self.calls), "X-429chain-Trace": self.header()}
        if answered_by is not None:
            headers["X-429chain-Provider"] = answered_by
        return headers
