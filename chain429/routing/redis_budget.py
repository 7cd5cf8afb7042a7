"""Paid budgets on Redis: one day's spend, and every call's hold, shared by all instances.

The memory ledger (chain429.routing.budget) in Redis, so N instances hold
against one budget: `SPEND_HOLD` checks what the day spent plus what every
instance's calls in flight hold, and adds this call's hold, in one atomic
script (redis_scripts.py); `SPEND_SETTLE` replaces it by the call's cost. A
day's keys are named by its date in `settings.timeZone` (`spend:2026-12-06`),
computed on Redis's clock (the store's measured offset), and expire a day
after the day ends.

A hold is a lease, like a concurrency slot: renewed while its call runs (the
store's lease renewer), so the holds of an instance that died lapse within
`stateLeaseMs` instead of shrinking the budget until midnight. A lapsed hold
charges nothing: its call died with its instance.

Redis away (`stateStoreFailure: open`): the instance holds against its own
memory ledger, which starts from the last spend it saw in Redis for the day
(every hold and settle answers with it). Each instance may then spend what was left when
Redis went away, once: during an outage N instances can overshoot by up to
N - 1 times that; `closed` refuses instead. A settle that cannot reach Redis
is charged to the memory ledger, so this instance does not forget it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chain429.routing.budget import (
    BudgetCap,
    BudgetDay,
    Overdrawn,
    SpendHold,
    budget_state,
)
from chain429.routing.limits import Block, StoreDown, overdrawn_block

if TYPE_CHECKING:
    from chain429.routing.redis_base import RedisStateBase

__all__ = ["RedisBudgets"]

# A day's keys outlive it by a day: a call that ends after midnight still finds them.
_KEEP_AFTER_DAY_S = 86400.0


@dataclass(slots=True)
class _RedisHold(SpendHold):
    member: str = ""  # the hold's name in its day's keys


class RedisBudgets:
    """The paid-budget half of the Redis state store (see the module docstring)."""

    def __init__(self, store: RedisStateBase) -> None:
        self.store = store

    def _keys(self, day: BudgetDay) -> list[str]:
        k = self.store._k
        return [k(f"spend:{day.label}"), k(f"spendheld:{day.label}"), k(f"spendhold:{day.label}")]

    def _redis_now(self) -> float:
        return time.time() + self.store._offset

    def _keep_s(self, day: BudgetDay) -> str:
        return f"{max(60.0, day.ends_at - self._redis_now()) + _KEEP_AFTER_DAY_S:.0f}"

    async def hold(
        self, caps: Sequence[BudgetCap], amount_usd: float, day: BudgetDay, now: float
    ) -> SpendHold | Block:
        store = self.store
        member = f"{store.instance}:s{next(store._ids)}"
        args: list[object] = [member, f"{amount_usd:.12f}", f"{store.lease_s:.3f}"]
        args.append(self._keep_s(day))
        for cap in caps:
            args += [cap.key, f"{cap.cap_usd:.12f}"]
        keys = self._keys(day)
        try:
            reply = await store.link.script("spend_hold", keys, args)
        except StoreDown:
            return await store._fallback().hold_spend(caps, amount_usd, day, now)
        if reply[0] == "over":
            cap = caps[int(reply[1]) - 1]
            spent, held = float(reply[2]), float(reply[3])
            store._clock(float(reply[4]))
            store.local.ledger.observe(cap.key, day, spent)
            return overdrawn_block(Overdrawn(cap, spent, held, amount_usd, day), now)
        store._clock(float(reply[1]))
        for index, cap in enumerate(caps):
            store.local.ledger.observe(cap.key, day, float(reply[2 + 2 * index]))
        store._open[member] = keys[1]  # renewed with the concurrency leases
        return _RedisHold(0, tuple(c.key for c in caps), amount_usd, day, member=member)

    async def settle(self, hold: SpendHold, cost_usd: float) -> None:
        store = self.store
        if not isinstance(hold, _RedisHold):
            await store.local.settle_spend(hold, cost_usd)  # held while Redis was away
            return
        if hold.done:
            return
        hold.done = True
        store._open.pop(hold.member, None)
        args: list[object] = [hold.member, f"{max(0.0, cost_usd):.12f}", self._keep_s(hold.day)]
        try:
            reply = await store.link.script(
                "spend_settle", self._keys(hold.day), [*args, *hold.keys]
            )
        except StoreDown:
            # The hold lapses by itself; the money was spent all the same.
            for key in hold.keys:
                store.local.ledger.charge(key, hold.day, cost_usd)
            return
        for key, spent in zip(hold.keys, reply[1:], strict=True):
            store.local.ledger.observe(key, hold.day, float(spent))

    async def report(
        self, caps: Sequence[BudgetCap], day: BudgetDay, now: float
    ) -> list[dict[str, Any]]:
        store = self.store
        spend_key, held_key, holds_key = self._keys(day)

        async def read(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.hgetall(spend_key)
            pipe.zrange(held_key, 0, -1, withscores=True)
            pipe.hgetall(holds_key)
            pipe.time()
            return list(await pipe.execute())

        try:
            spent, leases, holds, (seconds, micros) = await store.link.run(read)
        except StoreDown:
            return await store._fallback().spend_report(caps, day, now)
        redis_now = seconds + micros / 1e6
        store._clock(redis_now)
        live = {member for member, expiry in leases if expiry > redis_now}
        held: dict[str, float] = {}
        for member, value in holds.items():
            if member not in live:
                continue
            amount, _, budgets = value.partition("|")
            for key in budgets.split(","):
                held[key] = held.get(key, 0.0) + float(amount)
        states = []
        for cap in caps:
            used = float(spent.get(cap.key) or 0.0)
            store.local.ledger.observe(cap.key, day, used)
            states.append(budget_state(cap, used, held.get(cap.key, 0.0), day))
        return states
