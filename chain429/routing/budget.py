"""Paid budgets: what paid entries may spend per calendar day, held before each call.

`settings.paidBudgetUsdPerDay` caps everybody's paid spend, a client's
`paidBudgetUsdPerDay` its own; a request from that client answers to both.
The day is the server's (`settings.timeZone`): at its midnight every budget
starts again.

Exact under concurrency, by the same rule as a quota: a paid call first
*holds* its estimated cost (its prompt's estimate and the completion it
allows, times the entry's price: chain429.routing.tokens), atomically
against what was spent today plus what calls in flight hold; a hold that does
not fit skips the entry (`skip:budget`). When the answer is over the hold is
*settled*: replaced by the cost the provider's usage says (an answer), by
nothing (a failed call: providers do not bill errors), or by the estimate
itself (a call whose cost is unknown, such as one cut off by the client).
So concurrent requests can only overshoot a budget by what their answers
cost beyond their estimates, never by being admitted together.

Here: the request's plan (`SpendPlan`: its budgets and its estimate), the
day (`BudgetDay`), a hold (`SpendHold`), a refusal (`Overdrawn`, with the
words the trace shows), and the in-memory ledger that the memory state store
keeps and persists (`MemoryLedger`). The Redis store keeps the same ledger
in Redis (chain429.routing.redis_budget), shared by every instance.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

from chain429.routing import endpoints
from chain429.routing.endpoints import Endpoint
from chain429.upstream.times import next_midnight

if TYPE_CHECKING:
    from chain429.routing.runtime import EntryRuntime, Snapshot

__all__ = [
    "GLOBAL",
    "HELD_RETRY_S",
    "BudgetCap",
    "BudgetDay",
    "MemoryLedger",
    "Overdrawn",
    "SpendHold",
    "SpendPlan",
    "budget_caps",
    "estimate_usd",
    "plan_spend",
    "usd",
    "usd_left",
]

GLOBAL = "global"  # the key of `settings.paidBudgetUsdPerDay`; a client's is "client:<name>"
CLIENT_PREFIX = "client:"
# A hold that does not fit only because of other calls in flight may fit once
# they settle (below their estimates, or failed): come back in a second.
HELD_RETRY_S = 1.0
# Floating-point sums of small costs drift in the last digits; a call that
# fits to within a billionth of a dollar fits.
_EPSILON_USD = 1e-9


def usd(amount: float) -> str:
    """`$1.25`, `$0.02`, `$0.00015` for amounts under a cent, `<$0.000001` below that:
    what a person reads."""
    if amount == 0 or abs(amount) >= 0.01:
        return f"${amount:,.2f}"
    if abs(amount) < 0.000001:
        return "<$0.000001" if amount > 0 else "-<$0.000001"
    digits = f"{amount:.6f}".rstrip("0")
    return f"${digits}"


def usd_left(amount: float) -> str:
    """What is left of a budget, as `usd` writes it but never more than it is: whole
    cents are rounded down ($0.165 left reads `$0.16`), so what is shown spent and left
    never adds up to more than the cap."""
    if amount >= 0.01:
        amount = math.floor(amount * 100 + 1e-6) / 100
    return usd(amount)


@dataclass(frozen=True, slots=True)
class BudgetCap:
    """One budget a request answers to: its key, its cap, and how the trace names it."""

    key: str  # GLOBAL or "client:<name>"
    cap_usd: float

    @property
    def client(self) -> str | None:
        return self.key.removeprefix(CLIENT_PREFIX) if self.key != GLOBAL else None

    @property
    def owner(self) -> str:
        name = self.client
        return "paid budget" if name is None else f"client {name}'s paid budget"


def budget_caps(snapshot: Snapshot, client: str | None) -> tuple[BudgetCap, ...]:
    """The budgets a request from `client` (None: no client) answers to."""
    caps = []
    if snapshot.paid_budget_usd is not None:
        caps.append(BudgetCap(GLOBAL, snapshot.paid_budget_usd))
    own = snapshot.client_budgets_usd.get(client) if client is not None else None
    if own is not None:
        caps.append(BudgetCap(CLIENT_PREFIX + str(client), own))
    return tuple(caps)


@dataclass(frozen=True, slots=True)
class BudgetDay:
    """The server's calendar day a budget counts in: its date, and when it ends."""

    label: str  # "2026-12-06", the date in settings.timeZone
    ends_at: float  # epoch seconds of the next midnight there

    @classmethod
    def of(cls, now: float, zone: tzinfo) -> BudgetDay:
        return cls(datetime.fromtimestamp(now, zone).date().isoformat(), next_midnight(now, zone))


@dataclass(frozen=True, slots=True)
class SpendPlan:
    """A request's budgets and estimate, made once before its walk."""

    caps: tuple[BudgetCap, ...]
    prompt_tokens: int
    completion_tokens: int
    zone: tzinfo

    def estimate_usd(self, entry: EntryRuntime) -> float | None:
        """What one call to `entry` may cost, held before it is sent; None without a price."""
        if entry.price is None:
            return None
        return entry.price.cost(self.prompt_tokens, self.completion_tokens)

    def day(self, now: float) -> BudgetDay:
        return BudgetDay.of(now, self.zone)


def estimate_usd(entry: EntryRuntime, endpoint: Endpoint, request: dict[str, Any]) -> float | None:
    """What one call to `entry` may cost, from the request itself (the estimate a
    SpendPlan holds): the request log's cost of a call cut off before its usage came,
    held by a budget or not. None without a price."""
    if entry.price is None:
        return None
    return entry.price.cost(*endpoints.spend_estimate(endpoint, request))


def plan_spend(
    snapshot: Snapshot,
    request: dict[str, Any],
    client: str | None,
    endpoint: Endpoint = Endpoint.CHAT,
) -> SpendPlan | None:
    """The request's plan, or None when no budget applies to it (then nothing is held)."""
    caps = budget_caps(snapshot, client)
    if not caps:
        return None
    prompt, completion = endpoints.spend_estimate(endpoint, request)
    return SpendPlan(caps, prompt, completion, snapshot.config.settings.zone)


@dataclass(slots=True)
class SpendHold:
    """A paid call's estimated cost, held against its budgets until the call is settled."""

    id: int
    keys: tuple[str, ...]  # the budgets it is held against
    amount_usd: float
    day: BudgetDay
    done: bool = False


@dataclass(frozen=True, slots=True)
class Overdrawn:
    """A hold that did not fit: the budget that refused it, and its state."""

    cap: BudgetCap
    spent_usd: float
    held_usd: float  # by other calls in flight
    need_usd: float
    day: BudgetDay

    @property
    def left_usd(self) -> float:
        return max(0.0, self.cap.cap_usd - self.spent_usd - self.held_usd)

    def until(self, now: float) -> float:
        """When to look again: in a moment if only calls in flight are in the way, else
        at midnight."""
        if self.spent_usd + self.need_usd <= self.cap.cap_usd + _EPSILON_USD:
            return now + HELD_RETRY_S
        return self.day.ends_at

    @property
    def detail(self) -> str:
        """What the trace and the 503 say: `paid budget: $0.02 of $1.00 left today`."""
        text = f"{self.cap.owner}: {usd_left(self.left_usd)} of {usd(self.cap.cap_usd)} left today"
        if self.held_usd > _EPSILON_USD:
            text += f" ({usd(self.held_usd)} more reserved by calls in flight)"
        return f"{text}; this call may cost {usd(self.need_usd)}"


def fits(cap: BudgetCap, spent: float, held: float, need: float) -> bool:
    return spent + held + need <= cap.cap_usd + _EPSILON_USD


@dataclass(slots=True)
class _Spent:
    day: str
    ends_at: float
    usd: float = 0.0


class MemoryLedger:
    """Budgets kept in this process: what was spent today per budget, and the holds.

    Every method runs on the event loop without awaiting, so a check and the
    hold it grants are one step: concurrent requests are served one after the
    other. The memory state store saves `export` with its other state
    (chain429.requestlog.persist), so a restart remembers the day's spend.
    """

    def __init__(self) -> None:
        self._spent: dict[str, _Spent] = {}
        self._holds: dict[int, SpendHold] = {}
        self._ids = itertools.count(1)

    def spent(self, key: str, day: BudgetDay) -> float:
        found = self._spent.get(key)
        return found.usd if found is not None and found.day == day.label else 0.0

    def held(self, key: str, day: BudgetDay) -> float:
        return sum(h.amount_usd for h in self._holds.values() if key in h.keys and h.day == day)

    def hold(
        self, caps: Sequence[BudgetCap], amount_usd: float, day: BudgetDay
    ) -> SpendHold | Overdrawn:
        """Hold `amount_usd` against every cap, or the first cap it does not fit."""
        for cap in caps:
            spent, held = self.spent(cap.key, day), self.held(cap.key, day)
            if not fits(cap, spent, held, amount_usd):
                return Overdrawn(cap, spent, held, amount_usd, day)
        hold = SpendHold(next(self._ids), tuple(c.key for c in caps), amount_usd, day)
        self._holds[hold.id] = hold
        return hold

    def settle(self, hold: SpendHold, cost_usd: float) -> None:
        """Replace the hold by what the call cost (0 for a failed call). Once."""
        if hold.done:
            return
        hold.done = True
        self._holds.pop(hold.id, None)
        if cost_usd > 0:
            for key in hold.keys:
                self.charge(key, hold.day, cost_usd)

    def charge(self, key: str, day: BudgetDay, cost_usd: float) -> None:
        """Add to a budget's spend for `day`; a day already over is not counted again."""
        found = self._spent.get(key)
        if found is None or (found.day != day.label and found.ends_at < day.ends_at):
            found = self._spent[key] = _Spent(day.label, day.ends_at)
        if found.day == day.label:
            found.usd += cost_usd

    def observe(self, key: str, day: BudgetDay, spent_usd: float) -> None:
        """Take a spend seen elsewhere (the shared store) if it is more than ours."""
        self.charge(key, day, max(0.0, spent_usd - self.spent(key, day)))

    def report(self, caps: Sequence[BudgetCap], day: BudgetDay) -> list[dict[str, Any]]:
        return [
            budget_state(cap, self.spent(cap.key, day), self.held(cap.key, day), day)
            for cap in caps
        ]

    # -- surviving a restart -------------------------------------------------------

    def export(self, now: float) -> dict[str, dict[str, Any]]:
        """Today's spend per budget key (what a restart must not forget; holds are not:
        their calls belong to the process that stopped)."""
        return {
            key: {"day": s.day, "ends_at": s.ends_at, "spent_usd": s.usd}
            for key, s in self._spent.items()
            if s.ends_at > now and s.usd > 0
        }

    def restore(self, key: str, data: Mapping[str, Any], now: float) -> bool:
        """Take one exported item back; False when its day is over."""
        day = BudgetDay(str(data["day"]), float(data["ends_at"]))
        spent = float(data["spent_usd"])
        if day.ends_at <= now or not math.isfinite(spent) or spent < 0:
            return False
        self.observe(key, day, spent)
        return True


def budget_state(cap: BudgetCap, spent: float, held: float, day: BudgetDay) -> dict[str, Any]:
    """One budget as the admin API, the CLI, the web UI and the metrics show it."""
    return {
        "budget": cap.key,
        "client": cap.client,
        "cap_usd": cap.cap_usd,
        "spent_usd": round(spent, 9),
        "reserved_usd": round(held, 9),
        "left_usd": round(max(0.0, cap.cap_usd - spent - held), 9),
        "day": day.label,
        "resets_at": day.ends_at,
    }
