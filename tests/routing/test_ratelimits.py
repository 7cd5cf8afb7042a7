"""Rate-limit intelligence end to end: real header formats from the fake, real requests."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from chain429.fakes.provider import Reply
from fixtures.servers import chain_config, provider_entry

HELLO = [{"role": "user", "content": "hi"}]


def post(p, **body):
    with p.http() as http:
        return http.post(
            "/v1/chat/completions", json={"model": "main", "messages": HELLO, **body}, timeout=10
        )


def test_concurrent_requests_never_both_take_the_last_unit(fake, proxy):
    limited = fake("limited", default=Reply(delay=0.05))
    spare = fake("spare")
    config = chain_config(
        [
            provider_entry("limited", limited, rateLimits={"requestsPerMinute": 5}),
            provider_entry("spare", spare),
        ],
        [("limited", "m"), ("spare", "s")],
    )
    p = proxy(config)
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(lambda _: post(p).status_code, range(20)))
    assert statuses == [200] * 20
    assert len(limited.requests) == 5  # exactly the limit, never one more
    assert len(spare.requests) == 15


@pytest.mark.parametrize(
    ("provider_type", "headers"),
    [
        (
            "openai",
            {
                "x-ratelimit-limit-requests": "500",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "20s",
            },
        ),
        (
            "groq",
            {
                "x-ratelimit-limit-requests": "14400",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "2m59.56s",
            },
        ),
        (
            "cerebras",
            {
                "x-ratelimit-limit-requests-day": "14400",
                "x-ratelimit-remaining-requests-day": "0",
                "x-ratelimit-reset-requests-day": "33011.382867",
            },
        ),
        (
            "openrouter",
            {
                "X-RateLimit-Limit": "20",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": "{reset_ms}",
            },
        ),
        (
            "mistral",
            {"x-ratelimit-limit-req-minute": "60", "x-ratelimit-remaining-req-minute": "0"},
        ),
    ],
)
def test_a_success_that_says_nothing_is_left_skips_the_entry_next_time(
    fake, proxy, provider_type, headers
):
    headers = {k: v.format(reset_ms=int((time.time() + 40) * 1000)) for k, v in headers.items()}
    if provider_type == "mistral" and time.time() % 60 > 55:
        # Mistral's minute quota rests until the minute's end: not this close to it.
        time.sleep(60.5 - time.time() % 60)
    a = fake("a", default=Reply(headers=headers))
    b = fake("b")
    config = chain_config(
        [provider_entry("a", a, type=provider_type), provider_entry("b", b)],
        [("a", "model-a"), ("b", "model-b")],
    )
    p = proxy(config)
    assert post(p).headers["x-429chain-trace"] == "a/model-a=200"
    assert post(p).headers["x-429chain-trace"] == "a/model-a=skip:limited,b/model-b=200"
    assert len(a.requests) == 1
    with p.http() as http:
        report = http.get("/v1/ratelimits").json()
    entry = next(e for e in report["entries"] if e["provider"] == "a")
    assert entry["state"] == "limited"
    assert entry["source"] == "header"
    bucket = next(b for b in report["buckets"] if b["provider"] == "a")
    assert any(q["remaining"] == 0 and q["source"] == "header" for q in bucket["quotas"])


def test_a_request_bigger_than_the_remaining_tokens_is_skipped(fake, proxy):
    headers = {
        "x-ratelimit-remaining-tokens": "1000",
        "x-ratelimit-reset-tokens": "30s",
        "x-ratelimit-remaining-requests": "100",
        "x-ratelimit-reset-requests": "1m",
    }
    a = fake("a", default=Reply(headers=headers))
    b = fake("b")
    config = chain_config(
        [provider_entry("a", a, type="openai"), provider_entry("b", b)],
        [("a", "model-a"), ("b", "model-b")],
    )
    p = proxy(config)
    post(p)
    assert post(p, max_tokens=100).headers["x-429chain-trace"] == "a/model-a=200"
    big = post(p, max_tokens=4000)
    assert big.headers["x-429chain-trace"] == "a/model-a=skip:tokens,b/model-b=200"


def test_a_paid_entry_waits_for_a_free_one_that_recovers_soon(fake, proxy):
    free = fake("free")
    free.script(Reply.rate_limited(retry_after="1"))
    paid = fake("paid")
    config = chain_config(
        [provider_entry("free", free), provider_entry("paid", paid, paid=True)],
        [("free", "f"), ("paid", "p")],
        settings={"waitBeforePaidMs": 3000},
    )
    p = proxy(config)
    started = time.monotonic()
    response = post(p)
    assert response.headers["x-429chain-provider"] == "free/f"
    assert len(paid.requests) == 0
    assert 0.9 < time.monotonic() - started < 2.5


def test_without_wait_before_paid_the_paid_entry_answers_at_once(fake, proxy):
    free = fake("free", default=Reply.rate_limited(retry_after="1"))
    paid = fake("paid")
    config = chain_config(
        [provider_entry("free", free), provider_entry("paid", paid, paid=True)],
        [("free", "f"), ("paid", "p")],
    )
    assert post(proxy(config)).headers["x-429chain-provider"] == "paid/p"


def test_a_cancelled_request_frees_its_concurrency_slot(fake, proxy):
    slow = fake("slow", default=Reply(delay=2.0))
    spare = fake("spare")
    config = chain_config(
        [
            provider_entry("slow", slow, rateLimits={"concurrentRequests": 1}),
            provider_entry("spare", spare),
        ],
        [("slow", "s"), ("spare", "x")],
    )
    p = proxy(config)
    with pytest.raises(httpx.ReadTimeout), p.http() as http:
        http.post("/v1/chat/completions", json={"model": "main", "messages": HELLO}, timeout=0.3)
    time.sleep(0.1)
    slow.always(Reply())
    assert post(p).headers["x-429chain-trace"] == "slow/s=200"


def test_the_ratelimits_report_lists_buckets_with_in_flight_counts(fake, proxy):
    slow = fake("slow", default=Reply(delay=0.5))
    config = chain_config([provider_entry("slow", slow)], [("slow", "s")])
    p = proxy(config)
    thread = threading.Thread(target=post, args=(p,))
    thread.start()
    time.sleep(0.2)
    with p.http() as http:
        report = http.get("/v1/ratelimits").json()
    thread.join()
    (entry,) = report["entries"]
    assert entry["in_flight"] == 1
    assert entry["bucket"] == "slow/s"


def test_gemini_daily_quota_rests_until_midnight_pacific(fake, proxy):
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    body = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "message": "Quota exceeded. Please retry in 52.45s.",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                            "quotaValue": "250",
                        }
                    ],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "52.45s"},
            ],
        }
    }
    gemini = fake("gemini", default=Reply(status=429, body=body))
    b = fake("b")
    config = chain_config(
        [provider_entry("gemini", gemini, type="google-ai"), provider_entry("b", b)],
        [("gemini", "gemini-2.0-flash"), ("b", "model-b")],
    )
    p = proxy(config)
    post(p)
    with p.http() as http:
        entry = http.get("/v1/ratelimits").json()["entries"][0]
    until = datetime.fromisoformat(entry["until"].replace("Z", "+00:00"))
    pacific = datetime.now(ZoneInfo("America/Los_Angeles"))
    midnight = (pacific + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    # Not 52 s: the day's quota is gone, so the entry rests until Google's next day.
    assert abs((until - midnight).total_seconds()) < 5


def test_ratelimits_also_answers_in_429chain_shape(fake, proxy):
    a = fake("a", default=Reply.rate_limited(retry_after="30"))
    b = fake("b")
    config = chain_config(
        [provider_entry("a", a), provider_entry("b", b)], [("a", "model-a"), ("b", "model-b")]
    )
    p = proxy(config)
    post(p)
    with p.http() as http:
        rows = {r["provider"]: r for r in http.get("/v1/ratelimits").json()["ratelimits"]}
    assert rows["a"]["status"] == "exhausted"
    assert rows["a"]["cooldownUntil"] > time.time() * 1000 + 25_000
    assert rows["b"]["status"] == "available" and rows["b"]["cooldownUntil"] is None
    assert set(rows["a"]) == {"provider", "model", "status", "cooldownUntil", "reason", "quota"}


@pytest.mark.parametrize("paid_on", ["entry", "provider"])
def test_the_wait_before_paying_ends_after_the_free_entry_recovered(fake, proxy, paid_on):
    """The wait used to wake a hair before the stored cooldown ended, find the free
    entry still cooling, and pay (`free/f=429,free/f=skip:cooldown,paid/p=200`)."""
    free, paid = fake("free"), fake("paid")
    on_provider = {"paid": True} if paid_on == "provider" else {}
    config = chain_config(
        [provider_entry("free", free), provider_entry("paid", paid, **on_provider)],
        [("free", "f"), ("paid", "p")],
        settings={"waitBeforePaidMs": 3000},
    )
    if paid_on == "entry":
        config["chains"][0]["entries"][1]["paid"] = True
    p = proxy(config)
    for attempt in range(5):  # the race showed in about one request in three
        free.script(Reply.rate_limited(retry_after="0.3"))
        response = post(p)
        assert response.headers["x-429chain-trace"] == "free/f=429,free/f=200", attempt
    assert paid.requests == []
