"""Paid budgets in the state stores and the router: days, clients, holds that lapse.

The day and the clock are injected (a `BudgetDay` made from a chosen
moment), so midnight in `settings.timeZone` comes when the test says; the
same scenario runs on the memory store and on the real Redis. Per-client
budgets are checked where the router walks a chain for a request of a named
client (the server sets that name from the client's key).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest

from chain429.config.model import Config
from chain429.fakes.provider import FakeProvider
from chain429.routing.budget import GLOBAL, BudgetCap, BudgetDay, SpendHold, usd, usd_left
from chain429.routing.limits import Block, StateStoreUnavailable
from chain429.routing.memory_store import MemoryStateStore
from chain429.routing.outcome import BlockReason
from chain429.routing.redis_store import RedisStateStore
from chain429.routing.router import Router
from chain429.routing.runtime import build_snapshot
from chain429.routing.trace import Trace
from chain429.upstream.client import Upstream
from fixtures.redis import REDIS_URL
from fixtures.servers import chain_config
from fixtures.spend import COST, HELLO, MAX_TOKENS, PRICE, paid_answer
from fixtures.tcp_proxy import TcpProxy

PARIS = ZoneInfo("Europe/Paris")
# Half a minute before midnight in Paris, the night before summer time starts
# (2026-03-29 is 23 hours long there).
LATE = datetime(2026, 3, 28, 23, 59, 30, tzinfo=PARIS).timestamp()
MIDNIGHT = datetime(2026, 3, 29, tzinfo=PARIS).timestamp()
CAP = BudgetCap(GLOBAL, 1.00)


def on_each_store(scenario: Any, redis_ns: str | None) -> Any:
    async def main() -> Any:
        if redis_ns is None:
            return await scenario(MemoryStateStore())
        store = RedisStateStore(REDIS_URL, namespace=redis_ns)
        await store.start()
        try:
            assert store.problem is None
            return await scenario(store)
        finally:
            await store.aclose()

    return asyncio.run(main())


@pytest.fixture(params=["memory", "redis"])
def store_ns(request: pytest.FixtureRequest) -> str | None:
    """None for the memory store, else a Redis namespace of the test's own."""
    if request.param == "memory":
        return None
    return str(request.getfixturevalue("redis_ns"))


def test_a_budget_starts_again_at_midnight_in_its_time_zone(store_ns):
    today, tomorrow = BudgetDay.of(LATE, PARIS), BudgetDay.of(MIDNIGHT + 1, PARIS)
    assert (today.label, today.ends_at) == ("2026-03-28", MIDNIGHT)
    assert tomorrow.label == "2026-03-29" and tomorrow.ends_at - MIDNIGHT == 23 * 3600

    async def scenario(store: Any) -> None:
        held = await store.hold_spend([CAP], 0.60, today, LATE)
        assert isinstance(held, SpendHold)
        await store.settle_spend(held, 0.60)
        refused = await store.hold_spend([CAP], 0.60, today, LATE)
        assert isinstance(refused, Block) and refused.reason is BlockReason.BUDGET
        assert refused.detail == (
            "paid budget: $0.40 of $1.00 left today; this call may cost $0.60"
        )
        assert refused.until == MIDNIGHT  # spent, not merely reserved: back at midnight
        after = await store.hold_spend([CAP], 0.60, tomorrow, MIDNIGHT + 1)
        assert isinstance(after, SpendHold)
        (state,) = await store.spend_report([CAP], tomorrow, MIDNIGHT + 1)
        assert (state["spent_usd"], state["reserved_usd"]) == (0, pytest.approx(0.60))
        assert state["left_usd"] == pytest.approx(0.40)
        (yesterday,) = await store.spend_report([CAP], today, MIDNIGHT + 1)
        assert yesterday["spent_usd"] == pytest.approx(0.60)

    on_each_store(scenario, store_ns)


def test_reserved_but_not_spent_is_worth_retrying_in_a_moment(store_ns):
    day = BudgetDay.of(LATE, PARIS)

    async def scenario(store: Any) -> None:
        first = await store.hold_spend([CAP], 0.70, day, LATE)
        assert isinstance(first, SpendHold)
        refused = await store.hold_spend([CAP], 0.50, day, LATE)
        assert isinstance(refused, Block)
        assert "($0.70 more reserved by calls in flight)" in refused.detail
        assert refused.until == pytest.approx(LATE + 1.0)
        await store.settle_spend(first, 0.0)  # that call failed: nothing spent
        assert isinstance(await store.hold_spend([CAP], 0.50, day, LATE), SpendHold)

    on_each_store(scenario, store_ns)


def test_the_holds_of_an_instance_that_died_lapse(redis_ns):
    day = BudgetDay.of(time.time(), PARIS)

    async def main() -> None:
        dying = RedisStateStore(REDIS_URL, namespace=redis_ns, lease_s=1.0)
        other = RedisStateStore(REDIS_URL, namespace=redis_ns, lease_s=1.0)
        await dying.start()
        await other.start()
        try:
            assert isinstance(await dying.hold_spend([CAP], 0.90, day, time.time()), SpendHold)
            await dying.aclose()  # gone without settling: nobody renews its hold
            assert isinstance(await other.hold_spend([CAP], 0.50, day, time.time()), Block)
            await asyncio.sleep(1.2)
            assert isinstance(await other.hold_spend([CAP], 0.50, day, time.time()), SpendHold)
        finally:
            await other.aclose()

    asyncio.run(main())


async def complete_as(client: str | None, store: MemoryStateStore, snapshot: Any) -> Trace:
    """One request of `client` through the router; an answer is finished at its cost."""
    upstream = Upstream()
    try:
        trace = Trace()
        request = {"model": "main", "messages": HELLO, "max_tokens": MAX_TOKENS}
        reply = await Router(upstream, store).complete(
            snapshot, snapshot.chains["main"], request, trace, client=client
        )
        if reply.status == 200:
            (answered,) = trace.open
            await store.finish(answered, 130, COST)
        return trace
    finally:
        await upstream.aclose()


def test_a_client_answers_to_its_own_budget_and_to_everybodys():
    store = MemoryStateStore()

    async def main() -> dict[str, list[str]]:
        async with FakeProvider("paid", default=paid_answer()) as fake:
            provider = {
                "id": "paid",
                "type": "generic-openai",
                "baseUrl": fake.base_url,
                "paid": True,
                "price": PRICE,
            }
            config = chain_config(
                [provider], [("paid", "m")], settings={"paidBudgetUsdPerDay": 0.50}
            )
            config["clients"] = [
                {"name": "alice", "key": "alice-key-0123456789", "paidBudgetUsdPerDay": 0.20},
                {"name": "bob", "key": "bob-key-0123456789ab"},
            ]
            snapshot = build_snapshot(Config.model_validate(config))
            seen: dict[str, list[str]] = {}
            for client in ("alice", "alice", "bob", "bob", "bob"):
                trace = await complete_as(client, store, snapshot)
                (step,) = trace.trail
                seen.setdefault(client, []).append(f"{step.outcome} {step.reason}".strip())
            return seen

    seen = asyncio.run(main())
    # alice: $0.13 of her $0.20, then her next $0.12 does not fit her own budget.
    assert seen["alice"] == [
        "200",
        "skip:budget client alice's paid budget: $0.07 of $0.20 left today; "
        "this call may cost $0.12",
    ]
    # bob has no budget of his own: everybody's $0.50 holds him ($0.13 of it is alice's).
    assert seen["bob"] == [
        "200",
        "200",
        "skip:budget paid budget: $0.11 of $0.50 left today; this call may cost $0.12",
    ]


@pytest.mark.parametrize("failure", ["open", "closed"])
def test_with_redis_away_open_holds_on_the_last_spend_seen_and_closed_refuses(redis_ns, failure):
    """`open`: this instance's own ledger, starting from the day's spend it last saw in
    Redis; `closed`: no paid call without the shared budget."""
    day = BudgetDay.of(time.time(), PARIS)
    host, port = urlsplit(REDIS_URL).hostname or "127.0.0.1", urlsplit(REDIS_URL).port or 6379
    db = urlsplit(REDIS_URL).path or "/0"

    async def main(tcp: TcpProxy) -> None:
        url = f"redis://127.0.0.1:{tcp.port}{db}?socket_timeout=0.3"
        store = RedisStateStore(url, namespace=redis_ns, failure=failure)
        await store.start()
        try:
            held = await store.hold_spend([CAP], 0.60, day, time.time())
            assert isinstance(held, SpendHold)
            await store.settle_spend(held, 0.60)
            tcp.stall()
            if failure == "closed":
                with pytest.raises(StateStoreUnavailable):
                    await store.hold_spend([CAP], 0.30, day, time.time())
                return
            # $0.40 was left when Redis went away: $0.50 does not fit, $0.30 does.
            refused = await store.hold_spend([CAP], 0.50, day, time.time())
            assert isinstance(refused, Block)
            assert refused.detail.startswith("paid budget: $0.40 of $1.00 left today")
            local = await store.hold_spend([CAP], 0.30, day, time.time())
            assert isinstance(local, SpendHold)
            await store.settle_spend(local, 0.30)
            (state,) = await store.spend_report([CAP], day, time.time())
            assert state["spent_usd"] == pytest.approx(0.90)
        finally:
            await store.aclose()

    with TcpProxy((host, port)) as tcp:
        asyncio.run(main(tcp))


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (0, "$0.00"),
        (1.25, "$1.25"),
        (0.02, "$0.02"),
        (0.00015, "$0.00015"),
        (0.00000016, "<$0.000001"),  # an embedding's cost: never "$0."
        (1234.5, "$1,234.50"),
    ],
)
def test_dollars_read_as_a_person_reads_them(amount, shown):
    assert usd(amount) == shown


@pytest.mark.parametrize(
    ("left", "shown"),
    [(0.165, "$0.16"), (0.30, "$0.30"), (0.29, "$0.29"), (0.30 - 2 * 0.13, "$0.04"),
     (0.004, "$0.004"), (0, "$0.00")],
)  # fmt: skip
def test_what_is_left_is_never_shown_as_more_than_it_is(left, shown):
    # $0.035 spent of $0.20 reads $0.04 spent; $0.165 left must not read $0.17 beside it.
    assert usd_left(left) == shown
