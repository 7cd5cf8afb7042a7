"""Prices and a paid budget, seen from outside: the official SDK against a real server.

A free entry that 429s, then a priced paid entry: what each answer cost is
in the request log, the stats and the metrics; once the day's paid budget is
spent the paid entry is skipped (`skip:budget`) and the 503 says which budget
and what is left; a failed paid call costs nothing; a stream is charged when
it ends, a stream the client leaves at its estimate.

Costs and estimates are fixtures.spend's: $0.12 held, $0.13 charged per request.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chain429.fakes.provider import Reply
from chain429.requestlog.database import migrate, open_database
from chain429.requestlog.tables import database_proxy
from chain429.requestlog.writer import Telemetry
from fixtures.redis import REDIS_URL
from fixtures.servers import Proxy
from fixtures.spend import COST, ESTIMATE, HELLO, MAX_TOKENS, USAGE, paid_answer, spend_config


@pytest.fixture(autouse=True)
def _restore_model_binding():
    saved = database_proxy.obj
    yield
    database_proxy.initialize(saved)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The state store's settings: the memory store, or a namespace of the real Redis."""
    if request.param == "memory":
        return {}
    return {"stateStore": REDIS_URL, "stateNamespace": request.getfixturevalue("redis_ns")}


@pytest.fixture
def spend_proxy(fake, proxy, tmp_path: Path):
    """A server with a request log over a free entry that 429s and a priced paid entry."""

    def start(budget: float | None = 1.0, paid_reply: Reply | None = None, **settings: Any):
        free = fake("free", default=Reply.rate_limited(retry_after="300"))
        paid = fake("paid", default=paid_reply or paid_answer())
        database = open_database(f"sqlite:///{tmp_path / 'log.db'}")
        migrate(database)
        config = spend_config(free, paid, budget, **settings)
        return proxy(config, telemetry=Telemetry(database, batch_interval_s=0.01)), paid

    return start


def ask(p: Proxy, **extra: Any) -> Any:
    return p.openai().chat.completions.with_raw_response.create(
        model="main", messages=HELLO, max_tokens=MAX_TOKENS, **extra
    )


def admin(p: Proxy, path: str, **params: Any) -> Any:
    with p.http() as http:
        response = http.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json() if "json" in response.headers["content-type"] else response.text


def budget_now(p: Proxy) -> dict[str, Any]:
    (budget,) = admin(p, "/v1/admin/budgets")["budgets"]
    return budget


def logged(p: Proxy, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while True:
        rows = admin(p, "/v1/stats/requests")["data"]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_spend_is_logged_and_a_spent_budget_skips_the_paid_entry(spend_proxy):
    p, paid = spend_proxy(budget=0.30)
    first, second = ask(p), ask(p)
    assert first.headers["x-429chain-provider"] == "paid/paid-model"
    assert second.headers["x-429chain-trace"] == "free/free-model=skip:cooldown,paid/paid-model=200"

    # $0.26 spent: the next call's $0.12 does not fit in $0.30, so it is never made.
    with pytest.raises(openai.InternalServerError) as refused:
        ask(p)
    assert refused.value.status_code == 503
    assert len(paid.requests) == 2
    message = refused.value.message
    assert "paid/paid-model: skip:budget (paid budget: $0.04 of $0.30 left today" in message
    assert "this call may cost $0.12" in message
    trace = refused.value.response.headers["x-429chain-trace"]
    assert trace == "free/free-model=skip:cooldown,paid/paid-model=skip:budget"

    budget = budget_now(p)
    assert budget["budget"] == "global" and budget["client"] is None
    assert budget["cap_usd"] == 0.30
    assert budget["spent_usd"] == pytest.approx(2 * COST)
    assert budget["reserved_usd"] == 0
    assert budget["left_usd"] == pytest.approx(0.30 - 2 * COST)

    rows = logged(p, 3)
    answered = [r for r in rows if r["outcome"] == "success"]
    assert [r["cost_usd"] for r in answered] == [pytest.approx(COST)] * 2
    assert not any(r["cost_estimated"] for r in answered)
    assert [r["cost_usd"] for r in rows if r["outcome"] != "success"] == [None]

    by_provider = admin(p, "/v1/stats/spend", by="provider")
    assert by_provider["cost_usd"] == pytest.approx(2 * COST)
    assert [(r["provider"], r["requests"]) for r in by_provider["data"]] == [("paid", 2)]
    prompt, completion = USAGE["prompt_tokens"], USAGE["completion_tokens"]
    both = {"prompt": 2 * prompt, "completion": 2 * completion, "total": 2 * (prompt + completion)}
    assert by_provider["data"][0]["tokens"] == both
    by_chain = admin(p, "/v1/stats/spend", by="chain", since="1h")
    assert [(r["chain"], r["cost_usd"]) for r in by_chain["data"]] == [
        ("main", pytest.approx(2 * COST))
    ]

    found = metric_samples(admin(p, "/metrics"))
    spent = found[("chain429_spend_usd_total", (("chain", "main"), ("provider", "paid")))]
    assert spent == pytest.approx(2 * COST)
    left = found[("chain429_paid_budget_remaining_usd", (("client", ""),))]
    assert left == pytest.approx(0.30 - 2 * COST)


def test_a_paused_paid_entry_reads_paused_not_over_budget(spend_proxy, store):
    """With the budget spent and every entry paused, the 503 says they are paused and
    advises no retry: waiting for the budget's midnight would not end a pause."""
    admin_key = "admin-key-0123456789"
    p, paid = spend_proxy(budget=0.30, adminKeys=[admin_key], **store)
    ask(p), ask(p)  # $0.26 spent: the budget cannot take a third call
    with p.http(admin_key) as http:
        for provider in ("free", "paid"):
            paused = http.post("/v1/admin/entries/pause", json={"provider": provider})
            assert paused.status_code == 200, paused.text
    with pytest.raises(openai.InternalServerError) as refused:
        ask(p)
    error = refused.value
    assert error.response.headers["x-429chain-trace"] == (
        "free/free-model=skip:paused,paid/paid-model=skip:paused"
    )
    assert "Every entry of chain 'main' is paused" in error.message
    assert error.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in error.response.headers
    assert len(paid.requests) == 2


def test_without_a_budget_prices_still_count_spend(spend_proxy):
    p, _ = spend_proxy(budget=None)
    for _ in range(3):
        ask(p)
    assert admin(p, "/v1/admin/budgets")["budgets"] == []
    rows = logged(p, 3)
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(3 * COST)


def test_a_failed_paid_call_releases_its_reservation(spend_proxy, store):
    p, paid = spend_proxy(budget=0.20, paid_reply=Reply.error(500), **store)
    with pytest.raises(openai.InternalServerError):
        ask(p)
    assert len(paid.requests) == 1  # the call was made, and failed
    budget = budget_now(p)
    assert (budget["spent_usd"], budget["reserved_usd"]) == (0, 0)
    # Nothing was charged, so the whole budget is there for an answer.
    paid.always(paid_answer())
    assert ask(p).headers["x-429chain-provider"] == "paid/paid-model"
    assert budget_now(p)["spent_usd"] == pytest.approx(COST)


def test_a_stream_is_charged_when_it_ends(spend_proxy, store):
    usage = {"prompt_tokens": 10, "completion_tokens": 30, "total_tokens": 40}
    reply = Reply.stream("one two three", usage=usage, chunk_delay=0.05)
    p, _ = spend_proxy(budget=1.0, paid_reply=reply, **store)
    stream = p.openai().chat.completions.create(
        model="main", messages=HELLO, max_tokens=MAX_TOKENS, stream=True
    )
    seen = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            seen.append(chunk.choices[0].delta.content)
            if len(seen) == 1:  # mid-stream: its estimate is held
                assert budget_now(p)["reserved_usd"] == pytest.approx(ESTIMATE)
    assert "".join(seen) == "one two three"
    budget = budget_now(p)
    assert budget["reserved_usd"] == 0
    assert budget["spent_usd"] == pytest.approx(0.040)  # 40 tokens, not the estimate
    (row,) = logged(p, 1)
    # The SDK closes the connection at [DONE]: an answer all the same, at its real cost.
    assert row["outcome"] == "success" and row["total_tokens"] == 40
    assert row["cost_usd"] == pytest.approx(0.040) and row["cost_estimated"] is False


@pytest.mark.parametrize("budget", [1.0, None])
def test_a_client_that_leaves_mid_stream_is_charged_the_estimate(spend_proxy, store, budget):
    """Held by a budget or not, the request log's cost is the estimate; a budget holding
    the call is charged the same."""
    reply = Reply.stream("a b c d e f g h", chunk_delay=0.3)
    p, _ = spend_proxy(budget=budget, paid_reply=reply, **store)
    body = {"model": "main", "messages": HELLO, "max_tokens": MAX_TOKENS, "stream": True}
    headers = {"authorization": f"Bearer {p.api_key}"}
    with httpx.stream("POST", f"{p.url}/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status_code == 200
        next(r.iter_bytes())  # the first token; then the client goes away
    if budget is not None:
        deadline = time.monotonic() + 5
        while budget_now(p)["reserved_usd"] and time.monotonic() < deadline:
            time.sleep(0.05)
        held = budget_now(p)
        assert held["reserved_usd"] == 0  # nothing leaks
        assert held["spent_usd"] == pytest.approx(ESTIMATE)
    (row,) = logged(p, 1)
    assert row["outcome"] == "client_disconnected"
    assert row["cost_usd"] == pytest.approx(ESTIMATE) and row["cost_estimated"] is True


@pytest.mark.parametrize("budget", [1.0, None])
def test_a_client_that_gives_up_on_a_paid_call_is_charged_the_estimate(spend_proxy, budget):
    p, paid = spend_proxy(budget=budget, paid_reply=paid_answer(delay=3.0))
    with pytest.raises(openai.APITimeoutError):
        p.openai(timeout=0.5).chat.completions.create(
            model="main", messages=HELLO, max_tokens=MAX_TOKENS
        )
    deadline = time.monotonic() + 3
    while paid.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert paid.disconnects == 1  # the call was cut off, its cost unknown
    if budget is not None:
        held = budget_now(p)
        assert held["reserved_usd"] == 0
        assert held["spent_usd"] == pytest.approx(ESTIMATE)
    # The request log says the same as the budget: spend stats count the estimate.
    (row,) = logged(p, 1)
    assert row["outcome"] == "client_disconnected"
    assert row["cost_usd"] == pytest.approx(ESTIMATE) and row["cost_estimated"] is True
    spend = admin(p, "/v1/stats/spend", by="provider")
    assert spend["cost_usd"] == pytest.approx(ESTIMATE)


def test_an_entry_price_overrides_its_providers(fake, proxy):
    free = fake("free", default=Reply.rate_limited(retry_after="300"))
    paid = fake("paid", default=paid_answer())
    config = spend_config(free, paid, 10.0)
    config["chains"][0]["entries"][1]["price"] = {"inputPerMTok": 0, "outputPerMTok": 2000}
    p = proxy(config)
    ask(p)
    output_only = USAGE["completion_tokens"] * 0.002
    assert budget_now(p)["spent_usd"] == pytest.approx(output_only)


def test_a_slow_close_out_still_logs_a_stream_whose_client_left_at_done(spend_proxy, redis_ns):
    """A client that leaves once it has the whole answer, while the server frees the entry
    on Redis (a round trip, stretched here), must not cost the record or the settled cost."""
    usage = {"prompt_tokens": 10, "completion_tokens": 30, "total_tokens": 40}
    reply = Reply.stream("one two", usage=usage)
    shared = {"stateStore": REDIS_URL, "stateNamespace": redis_ns}
    p, _ = spend_proxy(budget=1.0, paid_reply=reply, **shared)
    state = p.server.app.ctx.state
    finish = state.finish

    async def slow_finish(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.5)  # the client is gone long before this ends
        return await finish(*args, **kwargs)

    state.finish = slow_finish
    body = {"model": "main", "messages": HELLO, "max_tokens": MAX_TOKENS, "stream": True}
    headers = {"authorization": f"Bearer {p.api_key}"}
    with httpx.stream("POST", f"{p.url}/v1/chat/completions", json=body, headers=headers) as r:
        for line in r.iter_lines():
            if line == "data: [DONE]":
                time.sleep(0.2)  # the server is freeing the entry by now
                break  # and the client closes
    (row,) = logged(p, 1)
    assert row["outcome"] == "success" and row["total_tokens"] == 40
    deadline = time.monotonic() + 5
    while budget_now(p)["reserved_usd"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert budget_now(p)["spent_usd"] == pytest.approx(0.040)
