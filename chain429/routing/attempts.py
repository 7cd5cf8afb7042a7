"""One entry, asked once: the send-and-classify of a plain call, and the bookkeeping
around any call.

Three callers ask entries: the non-streaming walk, the streaming walk (and a
stream's continuation on another entry), and chain tests. They share:

- `post_and_classify`: a non-streaming call and what its answer means (the
  streaming counterpart, up to the first token, is `StreamSession.open_entry`);
- `ask_entry`: hold a paid call's estimated cost against its paid budgets
  (chain429.routing.budget), reserve the entry's quota, make the call, record
  what the answer taught, and give the reservation (and the hold) back unless
  the entry answered — then the caller holds it until the answer (or stream)
  is over and finishes it with the tokens and the dollars it really cost.

Chain tests ignore cooldowns on purpose, so they call entries without a
reservation; what they learn is still recorded.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from chain429.routing.budget import SpendHold, SpendPlan
from chain429.routing.endpoints import Endpoint
from chain429.routing.limits import Block, Reservation, StateStore
from chain429.routing.outcome import BlockReason, CooldownPolicy, Kind, Outcome, Tried, classify
from chain429.routing.runtime import EntryRuntime
from chain429.upstream.client import Upstream, UpstreamError, UpstreamReply

__all__ = ["Asked", "ask_entry", "post_and_classify", "transport_failure"]

T = TypeVar("T")


def transport_failure(kind: str, policy: CooldownPolicy) -> Outcome:
    """What a call that got no (complete) HTTP answer means: timeout, refused, reset..."""
    return classify(None, {}, b"", kind, now=time.time(), policy=policy)


async def post_and_classify(
    upstream: Upstream,
    entry: EntryRuntime,
    payload: bytes,
    *,
    policy: CooldownPolicy,
    max_bytes: int,
    endpoint: Endpoint = Endpoint.CHAT,
) -> Tried[UpstreamReply]:
    """POST one non-streaming request on `endpoint` to an entry, and classify its answer."""
    try:
        reply = await upstream.post(
            entry.url_for(endpoint),
            entry.headers,
            payload,
            timeout_s=entry.timeout_s,
            max_bytes=max_bytes,
        )
    except UpstreamError as exc:
        return Tried(transport_failure(exc.kind, policy))
    outcome = classify(
        reply.status,
        reply.headers,
        reply.body,
        None,
        now=time.time(),
        policy=policy,
        dialect=entry.dialect,
        endpoint=endpoint,
    )
    return Tried(outcome, reply, reply.headers, reply.body)


@dataclass(frozen=True, slots=True)
class Asked(Generic[T]):
    """An entry that was called: its reservation (still open if it answered), what
    the call gave, the cooldown the answer set (if any), and how long it took."""

    reservation: Reservation
    tried: Tried[T]
    applied: Block | None
    latency_ms: float


async def _longer(state: StateStore, entry: EntryRuntime, budget: Block, now: float) -> Block:
    """An entry the budget refuses may be kept out by something else too (a pause, a
    cooldown): the trace names what keeps it out longer, so a paused entry reads
    `skip:paused` (and "every entry is paused" stays true) and a wait is never
    advised that the other block would outlast. Asked only when a budget refuses."""
    other = await state.check(entry, now)
    return other if other is not None and other.until > budget.until else budget


async def ask_entry(
    state: StateStore,
    entry: EntryRuntime,
    call: Callable[[EntryRuntime], Awaitable[Tried[T]]],
    *,
    need_tokens: int,
    policy: CooldownPolicy,
    spend: SpendPlan | None = None,
    cut_off: Callable[[EntryRuntime], None] | None = None,
) -> Asked[T] | Block:
    """Hold, reserve, call, record: the Block that kept the entry from being asked, or
    what the call gave. A successful answer's reservation (with its spend hold) stays
    open for the caller to `finish`; every other is finished here: a failed call's hold
    is released (providers do not bill an error), a call cut off (cancelled) is charged
    its estimate (the provider may have done the work), and told to `cut_off`."""
    now = time.time()
    hold: SpendHold | None = None
    if spend is not None and entry.paid:
        amount = spend.estimate_usd(entry)
        if amount is None:  # the config refuses this; never spend what cannot be counted
            until = spend.day(now).ends_at
            return Block(BlockReason.BUDGET, until, "entry", "no price: no paid budget can hold it")
        held = await state.hold_spend(spend.caps, amount, spend.day(now), now)
        if isinstance(held, Block):
            return await _longer(state, entry, held, now)
        hold = held
    reservation = await state.reserve(entry, need_tokens, now)
    if isinstance(reservation, Block):
        if hold is not None:
            await state.settle_spend(hold, 0.0)
        return reservation
    reservation.spend = hold
    started = time.perf_counter()
    try:
        tried = await call(entry)
    except BaseException:
        if cut_off is not None:
            cut_off(entry)
        await state.finish(reservation, None)
        raise
    latency_ms = (time.perf_counter() - started) * 1000
    applied = await state.record(
        reservation, tried.outcome, tried.headers, tried.body, time.time(), policy
    )
    if tried.outcome.kind is not Kind.SUCCESS:
        await state.finish(reservation, None, 0.0)
    return Asked(reservation, tried, applied, latency_ms)
