"""First token in time: firstTokenTimeoutMs counts from sending the request, and thinking counts.

Streams through the openai SDK; the clock is the client's.
"""

from __future__ import annotations

import time

import pytest

from chain429.fakes.provider import Reply
from fixtures.servers import chain_config, provider_entry

HELLO = [{"role": "user", "content": "hi"}]


def stream(client):
    with client.chat.completions.with_streaming_response.create(
        model="main", messages=HELLO, stream=True
    ) as raw:
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        return text, raw.headers


def setup(fake, proxy, first, settings=None):
    a, b = fake("a", default=first), fake("b")
    config = chain_config(
        [provider_entry("a", a), provider_entry("b", b)],
        [("a", "model-a"), ("b", "model-b")],
        settings=settings,
    )
    return a, b, proxy(config)


def test_with_the_defaults_a_20_s_first_token_is_answered_by_the_next_entry_within_12_s(
    fake, proxy
):
    # Headers at once, then nothing for 20 s.
    a, b, p = setup(fake, proxy, Reply.stream("too late", first_chunk_delay=20))
    started = time.monotonic()
    text, headers = stream(p.openai(timeout=30))
    elapsed = time.monotonic() - started
    assert text == "Hello from b"
    assert headers["x-429chain-trace"] == "a/model-a=first_token_timeout,b/model-b=200"
    assert 9.5 <= elapsed < 12


def test_the_time_to_the_headers_counts_against_the_first_token(fake, proxy):
    # 0.7 s to the headers, 0.7 s more to the first chunk: 1.4 s, over a 1 s limit.
    slow = Reply.stream("too late", delay=0.7, first_chunk_delay=0.7)
    a, b, p = setup(fake, proxy, slow, {"firstTokenTimeoutMs": 1000})
    started = time.monotonic()
    text, headers = stream(p.openai())
    elapsed = time.monotonic() - started
    assert text == "Hello from b"
    assert headers["x-429chain-trace"] == "a/model-a=first_token_timeout,b/model-b=200"
    assert elapsed < 1.35  # not 1 s after the headers (1.7 s)


def test_headers_later_than_the_limit_are_a_first_token_timeout(fake, proxy):
    a, b, p = setup(fake, proxy, Reply.stream("too late", delay=3), {"firstTokenTimeoutMs": 500})
    started = time.monotonic()
    text, headers = stream(p.openai())
    assert text == "Hello from b"
    assert headers["x-429chain-trace"] == "a/model-a=first_token_timeout,b/model-b=200"
    assert time.monotonic() - started < 1.2


def thinking(key: str) -> Reply:
    """A model that thinks for a while (reasoning deltas every 0.4 s), then answers."""

    def chunk(delta, finish=None):
        return {
            "object": "chat.completion.chunk",
            "model": None,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    return Reply(
        chunks=[
            chunk({"role": "assistant", key: "Let me think."}),
            chunk({key: " Still thinking."}),
            chunk({key: " Done."}),
            chunk({"content": "The answer is 42."}),
            chunk({}, "stop"),
            b"data: [DONE]\n\n",
        ],
        chunk_delay=0.4,
    )


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_a_reasoning_delta_is_a_first_token(fake, proxy, key):
    # The content comes at 1.6 s, past the 1 s limit; the thinking started at 0.4 s.
    a, b, p = setup(fake, proxy, thinking(key), {"firstTokenTimeoutMs": 1000})
    text, headers = stream(p.openai())
    assert text == "The answer is 42."
    assert headers["x-429chain-trace"] == "a/model-a=200"
    assert len(b.requests) == 0
