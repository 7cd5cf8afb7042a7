"""Streaming end to end: the openai SDK's streaming client -> chain429 -> fake providers."""

from __future__ import annotations

import contextlib
import json
import time

import httpx
import openai
import pytest

from chain429.fakes.provider import Reply
from fixtures.servers import chain_config, provider_entry

HELLO = [{"role": "user", "content": "hi"}]


def stream_text(client, **kwargs):
    """Stream through the SDK; return (text, response headers)."""
    kwargs.setdefault("model", "main")
    kwargs.setdefault("messages", HELLO)
    with client.chat.completions.with_streaming_response.create(stream=True, **kwargs) as raw:
        text = "".join(
            chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices
        )
        return text, raw.headers


def raw_events(p, **body):
    """The SSE events exactly as the client receives them."""
    body = {"model": "main", "messages": HELLO, "stream": True, **body}
    with p.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        text = response.read().decode()
    return [e[len("data: ") :] for e in text.split("\n\n") if e.startswith("data: ")]


def setup(fake, proxy, first, second=None, settings=None, first_extra=None, second_extra=None):
    a = fake("a", default=first)
    b = fake("b", default=second or Reply.stream("Hello from b"))
    config = chain_config(
        [
            provider_entry("a", a, **(first_extra or {})),
            provider_entry("b", b, **(second_extra or {})),
        ],
        [("a", "model-a"), ("b", "model-b")],
        settings=settings,
    )
    return a, b, proxy(config)


def test_stream_relays_every_chunk_with_headers(fake, proxy):
    a, b, p = setup(fake, proxy, Reply.stream("The quick brown fox"))
    text, headers = stream_text(p.openai())
    assert text == "The quick brown fox"
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert headers["x-429chain-provider"] == "a/model-a"
    assert headers["x-429chain-trace"] == "a/model-a=200"
    assert a.requests[0].json()["stream"] is True
    assert len(b.requests) == 0


@pytest.mark.parametrize(
    ("first", "token"),
    [
        (Reply.rate_limited(retry_after="30"), "429"),
        (Reply.error(503, "overloaded"), "503"),
        # 200, but JSON instead of a stream.
        (Reply(), "not_sse"),
        # An error event before any token (OpenRouter sends these inside a 200).
        (Reply(chunks=[{"error": {"message": "upstream failed", "code": 502}}]), "stream_error"),
        # Cut after the role chunk, before any content.
        (Reply.stream("never seen", cut_after=1), "connection_reset"),
        # [DONE] with no content at all.
        (Reply(chunks=["data: [DONE]\n\n"]), "empty_stream"),
        # An event that is not JSON before any token: the answer is broken, and unseen.
        (
            Reply(chunks=["data: {not json\n\n", *Reply.stream("never seen").chunks]),
            "malformed_event",
        ),
    ],
)
def test_failure_before_the_first_token_falls_through_unseen(fake, proxy, first, token):
    a, b, p = setup(fake, proxy, first)
    text, headers = stream_text(p.openai())
    assert text == "Hello from b"
    assert headers["x-429chain-trace"] == f"a/model-a={token},b/model-b=200"
    assert headers["x-429chain-provider"] == "b/model-b"
    assert headers["x-429chain-attempts"] == "2"
    assert (len(a.requests), len(b.requests)) == (1, 1)


def test_preamble_is_held_and_sent_once(fake, proxy):
    a, b, p = setup(fake, proxy, Reply.stream("never seen", cut_after=1))
    events = raw_events(p)
    roles = [e for e in events if '"role"' in e]
    assert len(roles) == 1 and "Hello" not in roles[0]
    assert events[-1] == "[DONE]"


def test_in_stream_429_before_the_first_token_cools_the_entry_down(fake, proxy):
    error = {"error": {"message": "Rate limit exceeded. Please try again in 20s", "code": 429}}
    a, b, p = setup(fake, proxy, Reply(chunks=[error]))
    assert stream_text(p.openai())[1]["x-429chain-trace"] == "a/model-a=429,b/model-b=200"
    assert stream_text(p.openai())[1]["x-429chain-trace"] == (
        "a/model-a=skip:cooldown,b/model-b=200"
    )


def test_slow_first_token_falls_through_after_first_token_timeout(fake, proxy):
    slow = Reply.stream("too late", chunk_delay=2.0)
    a, b, p = setup(fake, proxy, slow, settings={"firstTokenTimeoutMs": 300})
    started = time.monotonic()
    text, headers = stream_text(p.openai())
    assert text == "Hello from b"
    assert headers["x-429chain-trace"] == "a/model-a=first_token_timeout,b/model-b=200"
    assert time.monotonic() - started < 1.5


def test_slow_but_steady_stream_is_not_cut(fake, proxy):
    steady = Reply.stream("one two three four five six", chunk_delay=0.25)
    a, b, p = setup(
        fake,
        proxy,
        steady,
        settings={
            "firstTokenTimeoutMs": 1000,
            "streamIdleTimeoutMs": 600,
            "requestTimeoutMs": 1000,
        },
    )
    started = time.monotonic()
    text, _ = stream_text(p.openai())
    assert text == "one two three four five six"
    # Longer in total than every configured timeout, and still whole.
    assert time.monotonic() - started > 1.2


@pytest.mark.parametrize(
    ("first", "code", "settings"),
    [
        (
            Reply.stream("one two three four", stall_after=3),
            "stream_stalled",
            {"streamIdleTimeoutMs": 300},
        ),
        (Reply.stream("one two three four", cut_after=3), "stream_interrupted", {}),
        (
            Reply(
                chunks=[
                    {"choices": [{"index": 0, "delta": {"content": "one"}, "finish_reason": None}]},
                    {"error": {"message": "provider crashed"}},
                ]
            ),
            "stream_interrupted",
            {},
        ),
        # Closed cleanly, but without a finish_reason: the answer is not complete.
        (Reply.stream("one two", finish_reason="", done=False), "stream_interrupted", {}),
    ],
)
def test_failure_after_the_first_token_ends_with_an_error_event(fake, proxy, first, code, settings):
    a, b, p = setup(fake, proxy, first, settings=settings)
    with pytest.raises(openai.APIError) as caught:
        stream_text(p.openai())
    assert caught.value.code == code
    events = raw_events(p)
    assert "[DONE]" not in events
    error = json.loads(events[-1])["error"]
    assert (error["type"], error["code"]) == ("server_error", code)
    assert "secret-" not in events[-1]
    assert len(b.requests) == 0  # the client had seen tokens: no silent restart


def test_three_mid_stream_failures_in_a_row_cool_the_entry_down(fake, proxy):
    a, b, p = setup(fake, proxy, Reply.stream("one two three", cut_after=2))
    for _ in range(3):
        with pytest.raises(openai.APIError):
            stream_text(p.openai())
    text, headers = stream_text(p.openai())
    assert headers["x-429chain-trace"] == "a/model-a=skip:unstable,b/model-b=200"
    with p.http() as http:
        (block,) = http.get("/v1/ratelimits").json()["blocks"]
    assert block["reason"] == "unstable"
    assert 118_000 < block["remaining_ms"] <= 120_000


def test_a_clean_stream_resets_the_failure_count(fake, proxy):
    a, b, p = setup(fake, proxy, Reply.stream("x"))
    cut = Reply.stream("one two three", cut_after=2)
    a.script(cut, cut, Reply.stream("clean"), cut, cut)
    for _ in range(5):
        with contextlib.suppress(openai.APIError):
            stream_text(p.openai())
    assert stream_text(p.openai())[1]["x-429chain-trace"] == "a/model-a=200"


def test_stream_without_done_but_finished_gets_done_from_us(fake, proxy):
    a, b, p = setup(fake, proxy, Reply.stream("all of it", done=False))
    assert stream_text(p.openai())[0] == "all of it"
    assert raw_events(p)[-1] == "[DONE]"


def test_malformed_chunks_are_dropped_and_events_after_done_too(fake, proxy):
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "good"}, "finish_reason": None}]},
        "data: {not json\n\n",
        ": OPENROUTER PROCESSING\n\n",
        {"choices": [{"index": 0, "delta": {"content": " answer"}, "finish_reason": "stop"}]},
        "data: [DONE]\n\n",
        {"choices": [{"index": 0, "delta": {"content": " after done"}}]},
    ]
    a, b, p = setup(fake, proxy, Reply(chunks=chunks))
    assert stream_text(p.openai())[0] == "good answer"
    events = raw_events(p)
    assert not any("not json" in e or "after done" in e for e in events)
    assert events[-1] == "[DONE]"


def test_mid_stream_continue_finishes_the_answer_on_a_prefill_entry(fake, proxy):
    a = fake("a", default=Reply.stream("", pieces=["The answer", " is"], cut_after=3))
    c = fake("c", default=Reply.stream("no prefill here"))
    b = fake("b", default=Reply.stream("", pieces=[" forty", "-two."]))
    config = chain_config(
        [
            provider_entry("a", a),
            provider_entry("c", c),
            provider_entry("b", b, supportsPrefill=True),
        ],
        [("a", "model-a"), ("c", "model-c"), ("b", "model-b")],
        settings={"midStream": "continue"},
    )
    p = proxy(config)
    text, headers = stream_text(p.openai())
    assert text == "The answer is forty-two."
    assert headers["x-429chain-provider"] == "a/model-a"
    assert len(c.requests) == 0  # no prefill support: never sent one
    sent = b.requests[0].json()["messages"]
    assert sent == [*HELLO, {"role": "assistant", "content": "The answer is"}]


def test_mid_stream_default_is_an_error_even_with_prefill_entries(fake, proxy):
    a, b, p = setup(
        fake,
        proxy,
        Reply.stream("one two three", cut_after=2),
        second_extra={"supportsPrefill": True},
    )
    with pytest.raises(openai.APIError):
        stream_text(p.openai())
    assert len(b.requests) == 0


def usage_aware(text):
    """A fake that, like OpenAI, adds a usage chunk only when asked for one."""

    def reply(request):
        options = request.json().get("stream_options") or {}
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        return Reply.stream(text, usage=usage if options.get("include_usage") else None)

    return reply


def test_usage_is_asked_for_and_stripped_when_the_client_did_not_ask(fake, proxy):
    a, b, p = setup(fake, proxy, usage_aware("counted"), first_extra={"type": "openai"})
    events = raw_events(p)
    assert a.requests[0].json()["stream_options"] == {"include_usage": True}
    assert not any('"usage"' in e for e in events)
    assert events[-1] == "[DONE]"


def test_client_gets_exactly_the_stream_options_it_asked_for(fake, proxy):
    a, b, p = setup(fake, proxy, usage_aware("counted"), first_extra={"type": "openai"})
    client = p.openai()
    with client.chat.completions.with_streaming_response.create(
        model="main", messages=HELLO, stream=True, stream_options={"include_usage": True}
    ) as raw:
        chunks = list(raw.parse())
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 8
    assert a.requests[0].json()["stream_options"] == {"include_usage": True}


def test_generic_providers_get_no_stream_options(fake, proxy):
    a, b, p = setup(fake, proxy, usage_aware("plain"))
    assert stream_text(p.openai())[0] == "plain"
    assert "stream_options" not in a.requests[0].json()


def test_client_error_before_the_first_token_is_returned_unchanged(fake, proxy):
    a, b, p = setup(fake, proxy, Reply.error(400, "bad tool schema"))
    with pytest.raises(openai.BadRequestError) as caught:
        stream_text(p.openai())
    assert caught.value.response.json()["error"]["message"] == "bad tool schema"
    assert len(b.requests) == 0


def test_all_exhausted_stream_is_a_503(fake, proxy):
    a, b, p = setup(fake, proxy, Reply.rate_limited("9"), Reply.rate_limited("5"))
    with pytest.raises(openai.APIStatusError) as caught:
        stream_text(p.openai())
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"] in {"5", "6"}  # 5 s, plus jitter


def test_stream_must_be_a_boolean(fake, proxy):
    a, b, p = setup(fake, proxy, Reply.stream())
    with p.http() as http:
        response = http.post(
            "/v1/chat/completions", json={"model": "main", "messages": HELLO, "stream": "yes"}
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stream"


def wait_for_disconnect(provider, timeout=2.0):
    deadline = time.monotonic() + timeout
    while provider.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    return provider.disconnects


@pytest.mark.parametrize("phase", ["before the first token", "during the stream"])
def test_client_disconnect_cancels_the_upstream_stream(fake, proxy, phase, caplog):
    if phase == "before the first token":
        reply = Reply.stream("slow start", delay=3.0)
    else:
        reply = Reply.stream(" ".join(["word"] * 50), chunk_delay=0.1)
    a, b, p = setup(fake, proxy, reply)
    body = {"model": "main", "messages": HELLO, "stream": True}
    with httpx.Client(base_url=p.url, headers={"authorization": f"Bearer {p.api_key}"}) as http:
        if phase == "before the first token":
            with pytest.raises(httpx.ReadTimeout):
                http.post("/v1/chat/completions", json=body, timeout=0.3)
        else:
            with http.stream("POST", "/v1/chat/completions", json=body) as response:
                for _ in response.iter_raw():
                    break  # first chunk seen: now hang up
    closed_at = time.monotonic()
    assert wait_for_disconnect(a) == 1
    assert time.monotonic() - closed_at < 1.0
    assert len(b.requests) == 0
    # A client hanging up is normal, not an internal error.
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
