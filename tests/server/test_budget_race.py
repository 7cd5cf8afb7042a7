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

The same race with twenty client keys (`clients:`), each racer its own team
member: the same bound, every answer names its client, and spend per client
says who spent the dollar. Last, a client's own budget (`paidBudgetUsdPerDay`
on the client) stops that client before everybody's budget does.

The numbers are printed (`pytest -s`): admitted, refused, spent, overspend.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import openai
import pytest

from chain429.fakes.provider import Reply
from chain429.requestlog.database import migrate, open_database
from chain429.requestlog.writer import Telemetry
from fixtures.redis import REDIS_URL
from fixtures.servers import Proxy
from fixtures.spend import COST, ESTIMATE, HELLO, MAX_TOKENS, paid_answer, spend_config

CAP = 2.04
WARM_UP = 8  # sequential requests: $1.04 spent, the last dollar left
RACERS = 20


def warm_up(proxy: Proxy) -> None:
    """Spend all but the last dollar, one request after the other."""
    for _ in range(WARM_UP):
        proxy.openai().chat.completions.create(model="main", messages=HELLO, max_tokens=MAX_TOKENS)


def race_numbers(statuses: list[int], budget: dict[str, Any]) -> dict[str, Any]:
    """What the note reports of a race: who got in, what was spent, by how much over."""
    return {
        "racers": RACERS,
        "admitted": statuses.count(200),
        "refused": statuses.count(503),
        "cap_usd": CAP,
        "left_before_race_usd": round(CAP - WARM_UP * COST, 6),
        "estimate_usd": ESTIMATE,
        "cost_usd": COST,
        "spent_usd": round(budget["spent_usd"], 6),
        "reserved_after_usd": budget["reserved_usd"],
        "overspend_usd": round(budget["spent_usd"] - CAP, 6),
    }


def race(instances: list[Proxy]) -> dict[str, Any]:
    """Warm up on the first instance, then RACERS clients at once over all of them."""
    warm_up(instances[0])
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
    return race_numbers(statuses, budget)


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


# -- twenty client keys ---------------------------------------------------------------

# Keys built in code (the config is not a file: no `${VAR}` needed).
CLIENT_KEYS = {f"racer{i:02d}": f"racer-{i:02d}-key-0123456789abcdef" for i in range(RACERS)}


def with_clients(config: dict[str, Any], **client: Any) -> dict[str, Any]:
    config["clients"] = [{"name": name, "key": key, **client} for name, key in CLIENT_KEYS.items()]
    return config


def statuses_ok(statuses: dict[str, int]) -> int:
    return list(statuses.values()).count(200)


def race_as_clients(instances: list[Proxy]) -> tuple[dict[str, Any], dict[str, int]]:
    """The race above, each racer with its own client key; the answers' X-429chain-Client."""
    warm_up(instances[0])
    start = threading.Barrier(RACERS)
    statuses: dict[str, int] = {}
    named: dict[str, str] = {}
    lock = threading.Lock()

    def racer(index: int, name: str, key: str) -> None:
        proxy = instances[index % len(instances)]
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=key, max_retries=0, timeout=30)
        start.wait()
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="main", messages=HELLO, max_tokens=MAX_TOKENS
            )
            status, header = 200, raw.headers.get("x-429chain-client", "")
        except openai.APIStatusError as err:
            status, header = err.status_code, err.response.headers.get("x-429chain-client", "")
            assert "skip:budget (paid budget:" in err.message
        with lock:
            statuses[name], named[name] = status, header

    threads = [
        threading.Thread(target=racer, args=(i, name, key))
        for i, (name, key) in enumerate(CLIENT_KEYS.items())
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert named == {name: name for name in CLIENT_KEYS}  # each answer names its client
    with instances[0].http() as http:
        (budget,) = http.get("/v1/admin/budgets").json()["budgets"]
        deadline = time.monotonic() + 10  # the request logs' writers: a batch behind
        while True:
            spend = http.get("/v1/stats/spend", params={"since": "1h", "by": "client"}).json()
            logged = sum(row["requests"] for row in spend["data"])
            if logged >= WARM_UP + statuses_ok(statuses) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    numbers = race_numbers(list(statuses.values()), budget)
    by_client = {row["client"]: row["requests"] for row in spend["data"]}
    return numbers, by_client


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_twenty_client_keys_race_for_the_last_dollar(fake, proxy, store, request, tmp_path):
    """Twenty team members, each with a key of their own, race for the everybody's last
    dollar: the same bound, and the spend says who spent it."""
    free = fake("free", default=Reply.rate_limited(retry_after="300"))
    paid = fake("paid", default=paid_answer(delay=0.5))
    shared: dict[str, Any] = {}
    if store == "redis":
        shared = {"stateStore": REDIS_URL, "stateNamespace": request.getfixturevalue("redis_ns")}
    config = with_clients(spend_config(free, paid, CAP, **shared))
    database_url = f"sqlite:///{tmp_path / 'log.db'}"  # one request log for every instance
    migrate(open_database(database_url))

    def instance() -> Proxy:
        telemetry = Telemetry(open_database(database_url), batch_interval_s=0.01)
        return proxy(config, telemetry=telemetry)

    instances = [instance()] if store == "memory" else [instance(), instance()]
    numbers, by_client = race_as_clients(instances)
    check(numbers, len(paid.requests))
    # Who spent it: the warm-up's anonymous key, then one request each for the admitted.
    assert by_client.pop(None) == WARM_UP
    assert sorted(by_client.values()) == [1] * numbers["admitted"]
    assert set(by_client) <= set(CLIENT_KEYS)


def test_a_clients_own_budget_caps_it_before_everybodys(fake, proxy):
    """With the official SDK: alice's $0.30 a day stops her after two paid answers while
    bob, under the $2.04 everybody's budget alone, goes on; the 503 says whose budget."""
    free = fake("free", default=Reply.rate_limited(retry_after="300"))
    paid = fake("paid", default=paid_answer())
    config = spend_config(free, paid, CAP)
    config["clients"] = [
        {"name": "alice", "key": "alice-key-0123456789", "paidBudgetUsdPerDay": 0.30},
        {"name": "bob", "key": "bob-key-0123456789ab"},
    ]
    p = proxy(config)

    def ask(key: str) -> int:
        client = openai.OpenAI(base_url=f"{p.url}/v1", api_key=key, max_retries=0)
        try:
            client.chat.completions.create(model="main", messages=HELLO, max_tokens=MAX_TOKENS)
        except openai.APIStatusError as err:
            assert err.status_code == 503
            assert "client:alice" in err.message or "alice" in err.message, err.message
            return 503
        return 200

    # $0.12 held, $0.13 charged: two fit in $0.30 ($0.26 spent), the third's $0.12 does not.
    assert [ask("alice-key-0123456789") for _ in range(3)] == [200, 200, 503]
    assert [ask("bob-key-0123456789ab") for _ in range(3)] == [200, 200, 200]
    with p.http() as http:
        budgets = {b["budget"]: b for b in http.get("/v1/admin/budgets").json()["budgets"]}
    assert budgets["client:alice"]["spent_usd"] == pytest.approx(2 * COST)
    assert budgets["client:alice"]["left_usd"] == pytest.approx(0.30 - 2 * COST)
    assert budgets["global"]["spent_usd"] == pytest.approx(4 * COST + 1 * COST)
