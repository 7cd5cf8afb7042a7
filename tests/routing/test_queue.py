"""Queue mode: when every entry cools down, wait for the earliest recovery instead of a 503."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from chain429.fakes.provider import Reply
from fixtures.servers import chain_config, provider_entry

HELLO = [{"role": "user", "content": "hi"}]


def start(fake, proxy, settings, a_script=(), b_reply=None):
    a = fake("a")
    a.script(*a_script)
    b = fake("b", default=b_reply or Reply.rate_limited(retry_after="60"))
    config = chain_config(
        [provider_entry("a", a), provider_entry("b", b)],
        [("a", "model-a"), ("b", "model-b")],
        settings={"queueMode": True, **settings},
    )
    return a, b, proxy(config)


def test_a_queued_request_is_answered_when_an_entry_recovers(fake, proxy):
    a, b, p = start(fake, proxy, {}, a_script=[Reply.rate_limited(retry_after="1")])
    started = time.monotonic()
    raw = p.openai().chat.completions.with_raw_response.create(model="main", messages=HELLO)
    waited = time.monotonic() - started
    assert raw.parse().choices[0].message.content == "Hello from a"
    assert raw.headers["x-429chain-trace"].startswith("a/model-a=429,b/model-b=429,a/model-a=200")
    assert raw.headers["x-429chain-attempts"] == "3"
    assert 0.9 < waited < 3


def test_no_wait_when_recovery_is_beyond_queue_max_wait(fake, proxy):
    a, b, p = start(
        fake, proxy, {"queueMaxWaitMs": 500}, a_script=[Reply.rate_limited(retry_after="30")]
    )
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        p.openai().chat.completions.create(model="main", messages=HELLO)
    assert caught.value.status_code == 503
    assert caught.value.code == "queue_timeout"
    assert int(caught.value.response.headers["retry-after"]) >= 29
    assert time.monotonic() - started < 0.5


def test_queue_max_size_turns_extra_requests_away(fake, proxy):
    a, b, p = start(
        fake, proxy, {"queueMaxSize": 1}, a_script=[Reply.rate_limited(retry_after="1")]
    )
    results = {}

    def first():
        results["first"] = (
            p.http()
            .post("/v1/chat/completions", json={"model": "main", "messages": HELLO})
            .status_code
        )

    thread = threading.Thread(target=first)
    thread.start()
    time.sleep(0.3)  # the first request is queued now
    with p.http() as http:
        second = http.post("/v1/chat/completions", json={"model": "main", "messages": HELLO})
        depth = http.get("/metrics").text
    thread.join(timeout=5)
    assert second.status_code == 503
    assert "chain429_request_queue_depth 1.0" in depth
    assert results["first"] == 200


def test_client_disconnect_while_queued_cancels_the_wait(fake, proxy):
    a, b, p = start(fake, proxy, {}, a_script=[Reply.rate_limited(retry_after="1")])
    with pytest.raises(httpx.ReadTimeout), p.http() as http:
        http.post("/v1/chat/completions", json={"model": "main", "messages": HELLO}, timeout=0.3)
    time.sleep(1.3)  # past the recovery: a request still queued would have called again
    assert (len(a.requests), len(b.requests)) == (1, 1)
    with p.http() as http:
        assert "chain429_request_queue_depth 0.0" in http.get("/metrics").text


def post(p, content="hi", headers=None, timeout=10):
    with p.http() as http:
        return http.post(
            "/v1/chat/completions",
            json={"model": "main", "messages": [{"role": "user", "content": content}]},
            headers=headers or {},
            timeout=timeout,
        )


def test_the_clients_max_wait_header_shortens_the_wait(fake, proxy):
    a, b, p = start(fake, proxy, {}, a_script=[Reply.rate_limited(retry_after="5")])
    started = time.monotonic()
    response = post(p, headers={"X-429chain-Max-Wait": "1"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "queue_timeout"
    assert time.monotonic() - started < 0.5
    bad = post(p, headers={"X-429chain-Max-Wait": "soon"})
    assert bad.status_code == 400


def test_failures_other_than_rate_limits_answer_503_at_once(fake, proxy):
    a, b, p = start(fake, proxy, {}, a_script=[Reply.error(503, "down")])
    started = time.monotonic()
    response = post(p)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "all_providers_exhausted"
    assert time.monotonic() - started < 0.5


def test_queue_full_says_so_with_retry_after(fake, proxy):
    a, b, p = start(
        fake, proxy, {"queueMaxSize": 1}, a_script=[Reply.rate_limited(retry_after="2")]
    )
    waiting = threading.Thread(target=post, args=(p,))
    waiting.start()
    time.sleep(0.3)
    response = post(p)
    waiting.join(timeout=10)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "queue_full"
    assert int(response.headers["retry-after"]) >= 1


def test_queued_requests_are_answered_first_come_first_served_once_each(fake, proxy):
    a, b, p = start(fake, proxy, {}, a_script=[Reply.rate_limited(retry_after="1")])
    results = {}

    def send(n):
        results[n] = post(p, content=f"request {n}").status_code

    threads = []
    for n in range(5):
        threads.append(threading.Thread(target=send, args=(n,)))
        threads[-1].start()
        time.sleep(0.1)  # a clear arrival order
    for thread in threads:
        thread.join(timeout=10)
    assert results == dict.fromkeys(range(5), 200)
    answered = [r.json()["messages"][0]["content"] for r in a.requests[1:]]
    # Request 0 met the 429; everyone then waited in line and was sent exactly once, in order.
    assert answered == [f"request {n}" for n in range(5)]


def test_a_freed_concurrency_slot_wakes_the_queue_without_polling(fake, proxy):
    slow = fake("slow", default=Reply(delay=1.0))
    b = fake("b", default=Reply.rate_limited(retry_after="60"))
    config = chain_config(
        [
            provider_entry("slow", slow, rateLimits={"concurrentRequests": 1}),
            provider_entry("b", b),
        ],
        [("slow", "s"), ("b", "model-b")],
        settings={"queueMode": True},
    )
    p = proxy(config)
    first = threading.Thread(target=post, args=(p,))
    first.start()
    time.sleep(0.2)
    started = time.monotonic()
    second = post(p)
    first.join(timeout=10)
    assert second.status_code == 200
    # The slot freed after about 0.8 s more; the fallback re-check would be 5 s away.
    assert time.monotonic() - started < 2.5


def test_shutdown_sends_queued_requests_away_with_queue_shutdown(fake, proxy):
    a, b, p = start(fake, proxy, {}, a_script=[Reply.rate_limited(retry_after="30")])
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", post(p, timeout=20)))
    thread.start()
    time.sleep(0.3)
    p.server.stop()
    thread.join(timeout=20)
    response = result["r"]
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "queue_shutdown"
    assert "retry-after" in response.headers
