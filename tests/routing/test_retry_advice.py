"""An exhausted chain and the OpenAI SDK's own retries (docs/api.md, "Retrying").

The SDK retries a 503 twice by default and honours `Retry-After` up to a
minute each time: against a chain that recovers in minutes, one `create()`
used to take three minutes to raise. Now the 503 says whether a retry can
succeed: beyond `settings.clientRetryMaxWaitMs` it says `x-should-retry:
false` and the SDK raises at once; sooner, the SDK's retry lands after the
recovery and succeeds.
"""

from __future__ import annotations

import time

import openai
import pytest

from chain429.fakes.provider import Reply
from fixtures.servers import chain_config, provider_entry

HELLO = [{"role": "user", "content": "hi"}]


def sdk(p) -> openai.OpenAI:
    # The SDK's defaults, retries included: what users run.
    return openai.OpenAI(base_url=f"{p.url}/v1", api_key=p.api_key, timeout=30)


def test_a_chain_that_recovers_in_minutes_fails_at_once(fake, proxy):
    a = fake("a", default=Reply.rate_limited(retry_after="300"))
    b = fake("b", default=Reply.rate_limited(retry_after="240"))
    p = proxy(
        chain_config([provider_entry("a", a), provider_entry("b", b)], [("a", "x"), ("b", "y")])
    )
    assert sdk(p).max_retries == 2
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as raised:
        sdk(p).chat.completions.create(model="main", messages=HELLO)
    assert time.monotonic() - started < 3
    response = raised.value.response
    assert response.status_code == 503
    assert response.headers["x-should-retry"] == "false"
    assert 235 <= int(response.headers["retry-after"]) <= 260  # for clients that plan
    assert len(a.requests) == 1 and len(b.requests) == 1  # no retry reached the proxy


def test_a_chain_that_recovers_soon_is_retried_by_the_sdk_and_answers(fake, proxy):
    a = fake("a")
    a.script(Reply.rate_limited(retry_after="2"))
    p = proxy(chain_config([provider_entry("a", a)], [("a", "x")]))
    started = time.monotonic()
    reply = sdk(p).chat.completions.with_raw_response.create(model="main", messages=HELLO)
    elapsed = time.monotonic() - started
    assert reply.headers["x-429chain-provider"] == "a/x"
    assert reply.parse().choices[0].message.content
    assert 1.9 <= elapsed < 6, elapsed  # the retry waited for the recovery, once
    assert len(a.requests) == 2


def test_the_threshold_is_a_setting(fake, proxy):
    a = fake("a", default=Reply.rate_limited(retry_after="30"))
    p = proxy(
        chain_config(
            [provider_entry("a", a)], [("a", "x")], settings={"clientRetryMaxWaitMs": 60000}
        )
    )
    with p.http() as http:
        answer = http.post("/v1/chat/completions", json={"model": "main", "messages": HELLO})
    assert answer.status_code == 503
    assert answer.headers["x-should-retry"] == "true"
    assert 29_000 <= int(answer.headers["retry-after-ms"]) <= 32_000
