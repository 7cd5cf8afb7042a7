"""Twenty clients racing for the last dollar of a paid budget: overspend at most one estimate.

The budget is $2.04. Eight requests, one after the other, spend $1.04 of it
(each is held at its $0.12 estimate and charged the $0.13 the provider
reports), leaving the last dollar. Then twenty clients ask at once, each
with the official SDK, while the paid provider takes half a second to
answer. Each holds $0.12 before its call, atomically against what was spent
plus what the others hold: eight fit in the dollar ($0.96), the other twelve
are skipped (`skip:budget`, a 503) without a call. Their answers cost $0.13
each, a cent more than their estimates (a prompt longer than four characters
a token), so the day ends $0.04 over: less than one request's estimate, the
bound a hold-then-settle budget promises. Once in memory (one instance), once
on the real Redis with two instances sharing one budget.

The numbers are printed (`pytest -s`): admitted, refused, spent, overspend.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import openai
import pytest

from chain429.fakes.provider import Reply
from fixtures.redis import REDIS_URL
from fixtures.servers import Proxy
from fixtures.spend import COST, ESTIMATE, HELLO, MAX_TOKENS, paid_answer, spend_config

CAP = 2.04
WARM_UP = 8  # sequential requests: $1.04 spent, the last dollar left
RACERS = 20


def race(instances: list[Proxy]) -> dict[str, Any]:
    """Warm up on the first instance, then RACERS clients at once over all of them."""
    for _ in range(WARM_UP):
        instances[0].openai().chat.completions.create(
            model="main", messages=HELLO, max_tokens=MAX_TOKENS
        )
    start = threading.Barrier(RACERS)
    statuses: list[int] = []
    lock = threading.Lock()

    def racer(index: int) -> None:
        client = instances[index % len(instances)].openai(timeout=30)
        start.wait()
        try:
            client.chat.completions.create(model="main", messages=HELLO, max_tokens=MAX_TOKENS)
            status = 200
        except openai.APIStatusError as err:
            status = err.status_code
            assert "skip:budget (paid budget:" in err.message
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    with instances[0].http() as http:
        (budget,) = http.get("/v1/admin/budgets").json()["budgets"]
    admitted = statuses.count(200)
    return {
        "racers": RACERS,
        "admitted": admitted,
        "refused": statuses.count(503),
        "cap_usd": CAP,
        "left_before_race_usd": round(CAP - WARM_UP * COST, 6),
        "estimate_usd": ESTIMATE,
        "cost_usd": COST,
        "spent_usd": round(budget["spent_usd"], 6),
        "reserved_after_usd": budget["reserved_usd"],
        "overspend_usd": round(budget["spent_usd"] - CAP, 6),
    }


def check(numbers: dict[str, Any], paid_calls: int) -> None:
    print(f"\nbudget race: {json.dumps(numbers)}")
    assert numbers["admitted"] + numbers["refused"] == RACERS
    # Exactly as many as fit in the last dollar: none more, and none fewer.
    assert numbers["admitted"] == int(numbers["left_before_race_usd"] // ESTIMATE) == 8
    assert paid_calls == WARM_UP + numbers["admitted"]  # the refused never reached the provider
    assert numbers["reserved_after_usd"] == 0
    assert numbers["spent_usd"] == pytest.approx((WARM_UP + numbers["admitted"]) * COST)
    assert numbers["overspend_usd"] <= ESTIMATE


def test_twenty_clients_race_for_the_last_dollar_in_memory(fake, proxy):
    free = fake("free", default=Reply.rate_limited(retry_after="300"))
    paid = fake("paid", default=paid_answer(delay=0.5))
    p = proxy(spend_config(free, paid, CAP))
    check(race([p]), len(paid.requests))


def test_twenty_clients_race_for_the_last_dollar_across_two_instances_on_redis(
    fake, proxy, redis_ns
):
    free = fake("free", default=Reply.rate_limited(retry_after="300"))
    paid = fake("paid", default=paid_answer(delay=0.5))
    config = spend_config(free, paid, CAP, stateStore=REDIS_URL, stateNamespace=redis_ns)
    a, b = proxy(config), proxy(config)
    check(race([a, b]), len(paid.requests))
