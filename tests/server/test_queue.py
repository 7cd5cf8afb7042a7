"""Queue mode: when every entry cools down, wait for the earliest recovery instead of a 503."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from chain429.testing import Reply
from conftest import chain_config, provider_entry

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
