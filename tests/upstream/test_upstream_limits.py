"""Upstream answers are bounded: sizes, compression bombs, deep nesting, keep-alives, duration.

Everything over real HTTP: the openai SDK (or httpx) -> chain429 -> fake providers
playing hostile answers. Limits are set small in each test's config so the tests
stay fast; one test checks the 32 MiB default with a 1 GiB gzip bomb.
"""

from __future__ import annotations

import gzip
import json
import time
import zlib
from pathlib import Path

import openai
import pytest

from chain429.fakes.provider import Reply
from chain429.fakes.replies import deep_json
from fixtures.servers import chain_config, provider_entry

HELLO = [{"role": "user", "content": "hi"}]
KIB = 1024
MIB = 1024 * KIB


def two_entries(fake, proxy, first, settings=None):
    a = fake("a", default=first)
    b = fake("b")
    b.always(
        lambda request: Reply.stream("Hello from b") if request.json().get("stream") else Reply()
    )
    config = chain_config(
        [provider_entry("a", a), provider_entry("b", b)],
        [("a", "model-a"), ("b", "model-b")],
        settings=settings,
    )
    return a, b, proxy(config)


def ask(p):
    raw = p.openai().chat.completions.with_raw_response.create(model="main", messages=HELLO)
    return raw.parse().choices[0].message.content, raw.headers


def stream(p):
    """(text, headers, SSE data payloads) of one streamed request, read raw."""
    body = {"model": "main", "messages": HELLO, "stream": True}
    with p.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        raw = response.read().decode()
        headers = response.headers
    events = [e[len("data: ") :] for e in raw.split("\n\n") if e.startswith("data: ")]
    text = ""
    for event in events:
        if event != "[DONE]" and "choices" in (chunk := json.loads(event)):
            text += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
    return text, headers, events


def content(text, finish=None):
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


ROLE = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}


def error_code(events):
    assert "[DONE]" not in events
    return json.loads(events[-1])["error"]["code"]


class PeakRss:
    """This process's peak resident memory over a block (Linux: VmHWM, reset first)."""

    def __enter__(self):
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.start = self._read("VmHWM")
        except OSError:
            self.start = None
        return self

    def __exit__(self, *exc):
        self.growth_mb = None if self.start is None else (self._read("VmHWM") - self.start) / 1024

    @staticmethod
    def _read(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])  # kB
        raise OSError(field)


# -- plain (non-streaming) answers ------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_falls_through_one_at_the_limit_does_not(fake, proxy, chunked):
    limit = 64 * KIB

    def sized(size):
        reply = Reply.sized(size)
        if not chunked:
            return reply
        body = reply._static
        pieces = [body[i : i + 4096] for i in range(0, len(body), 4096)]
        return Reply(chunks=pieces, headers={"content-type": "application/json"})

    a, b, p = two_entries(fake, proxy, sized(limit), {"maxUpstreamBodyBytes": limit})
    text, headers = ask(p)
    assert headers["x-429chain-trace"] == "a/model-a=200"
    assert len(text) > 60_000

    a.always(sized(limit + 1))
    text, headers = ask(p)
    assert text == "Hello from b"
    assert headers["x-429chain-trace"] == "a/model-a=upstream_too_large,b/model-b=200"
    # An oversized answer rests the entry a minute: the next request does not read it again.
    _, headers = ask(p)
    assert headers["x-429chain-trace"] == "a/model-a=skip:unhealthy,b/model-b=200"
    assert len(a.requests) == 2


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compression_bomb_is_refused_at_the_default_limit_quickly(fake, proxy, encoding):
    # 2 MB on the wire, 2 GiB inflated; the default limit is 32 MiB.
    bomb = Reply.bomb(2048, encoding)
    assert len(bomb._static) < 2.2 * MIB
    a, b, p = two_entries(fake, proxy, bomb)
    started = time.monotonic()
    with PeakRss() as rss:
        text, headers = ask(p)
    assert time.monotonic() - started < 3
    assert text == "Hello from b"
    assert headers["x-429chain-trace"] == "a/model-a=upstream_too_large,b/model-b=200"
    if rss.growth_mb is not None:  # inflating 1 GiB of it took 2 GB before the limit
        assert rss.growth_mb < 200


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw deflate"])
def test_a_compressed_answer_within_the_limit_is_decoded(fake, proxy, encoding):
    body = Reply.sized(200 * KIB)._static
    if encoding == "gzip":
        packed = gzip.compress(body)
    elif encoding == "deflate":
        packed = zlib.compress(body)
    else:  # what some servers send as "deflate": no zlib header
        squeeze = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        packed = squeeze.compress(body) + squeeze.flush()
    name = encoding.split()[-1]
    reply = Reply(body=packed, headers={"content-encoding": name})
    a, b, p = two_entries(fake, proxy, reply, {"maxUpstreamBodyBytes": 256 * KIB})
    text, headers = ask(p)
    assert headers["x-429chain-trace"] == "a/model-a=200"
    assert text == "x" * len(text) and len(text) > 200_000
    assert a.requests[0].headers["accept-encoding"] == "gzip, deflate"


def test_a_body_that_is_not_what_its_encoding_says_falls_through(fake, proxy):
    broken = Reply(
        body=b"\x1f\x8b\x08\x00" + b"not gzip at all" * 10, headers={"content-encoding": "gzip"}
    )
    a, b, p = two_entries(fake, proxy, broken)
    text, headers = ask(p)
    assert text == "Hello from b"
    assert headers["x-429chain-trace"] == "a/model-a=upstream_error,b/model-b=200"


def test_deeply_nested_json_bodies_fall_through_never_500(fake, proxy):
    deep = deep_json(100_000)
    a, b, p = two_entries(fake, proxy, Reply(body=deep))
    text, headers = ask(p)
    assert text == "Hello from b"
    assert headers["x-429chain-trace"] == "a/model-a=invalid_body,b/model-b=200"
    # A 429 whose body is too deep to read still is a 429 (its hints are just unread).
    a.always(Reply.rate_limited(retry_after="30", body=deep))
    _, headers = ask(p)
    assert headers["x-429chain-trace"] == "a/model-a=429,b/model-b=200"


# -- streams before the first token: fall through, unseen ---------------------


@pytest.mark.parametrize(
    ("first", "settings", "token"),
    [
        # A body over the limit before any token (comments count: they are bytes held).
        (
            Reply(chunks=[": " + "pad" * 300 + "\n\n"] * 100 + [ROLE, content("late", "stop")]),
            {"maxUpstreamBodyBytes": 64 * KIB},
            "upstream_too_large",
        ),
        # A gzip bomb sent as a stream: refused at the 32 MiB default.
        (Reply.bomb(1024, stream=True), {}, "upstream_too_large"),
        # One event over maxSseEventBytes.
        (
            Reply.stream("", pieces=["y" * 100_000]),
            {"maxSseEventBytes": 64 * KIB},
            "upstream_too_large",
        ),
        # 100,000 levels of nesting: a malformed answer, before anything was sent.
        (
            Reply(chunks=[ROLE, "data: " + deep_json(100_000) + "\n\n", content("x", "stop")]),
            {},
            "malformed_event",
        ),
    ],
    ids=["body", "gzip-bomb", "event", "deep-json"],
)
def test_oversized_or_broken_streams_fall_through_before_the_first_token(
    fake, proxy, first, settings, token
):
    a, b, p = two_entries(fake, proxy, first, settings)
    started = time.monotonic()
    text, headers, events = stream(p)
    assert time.monotonic() - started < 3
    assert text == "Hello from b"
    assert events[-1] == "[DONE]"
    assert headers["x-429chain-trace"] == f"a/model-a={token},b/model-b=200"


def test_keep_alives_alone_never_make_a_first_token(fake, proxy):
    keepalive = Reply(forever=": OPENROUTER PROCESSING\n\n", chunk_delay=0.1)
    settings = {"firstTokenTimeoutMs": 500, "streamIdleTimeoutMs": 300}
    a, b, p = two_entries(fake, proxy, keepalive, settings)
    started = time.monotonic()
    text, headers, _ = stream(p)
    assert 0.45 < time.monotonic() - started < 2
    assert text == "Hello from b"
    assert headers["x-429chain-trace"] == "a/model-a=first_token_timeout,b/model-b=200"


def test_a_gzipped_stream_is_decoded_and_relayed(fake, proxy):
    squeeze = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    events = [ROLE, content("zipped"), content(" stream", "stop")]
    pieces = [squeeze.compress(b"data: %s\n\n" % json.dumps(e).encode()) for e in events]
    pieces = [p + squeeze.flush(zlib.Z_SYNC_FLUSH) for p in pieces]
    pieces += [squeeze.compress(b"data: [DONE]\n\n") + squeeze.flush()]
    a, b, p = two_entries(fake, proxy, Reply(chunks=pieces, headers={"content-encoding": "gzip"}))
    text, headers, events = stream(p)
    assert (text, events[-1]) == ("zipped stream", "[DONE]")
    assert headers["x-429chain-trace"] == "a/model-a=200"
    assert a.requests[0].headers["accept-encoding"] == "gzip, deflate"


# -- streams after the first token: an error event, never a clean end ----------


@pytest.mark.parametrize(
    "keepalive",
    [": keep-alive\n\n", "\n\n", "event: ping\n\n"],
    ids=["comment", "blank", "no-data"],
)
def test_keep_alives_after_the_first_token_do_not_hold_off_the_stall(fake, proxy, keepalive):
    reply = Reply(chunks=[ROLE, content("one")], forever=keepalive, chunk_delay=0.1)
    # The duration limit is a backstop: were keep-alives activity, it would end the stream.
    settings = {"streamIdleTimeoutMs": 400, "streamMaxDurationMs": 5000}
    a, b, p = two_entries(fake, proxy, reply, settings)
    started = time.monotonic()
    text, _, events = stream(p)
    assert 0.35 < time.monotonic() - started < 2
    assert text == "one"
    assert error_code(events) == "stream_stalled"
    assert len(b.requests) == 0


def test_an_endless_active_stream_ends_at_the_maximum_duration(fake, proxy):
    reply = Reply(chunks=[ROLE], forever=content(" more"), chunk_delay=0.02)
    settings = {"streamMaxDurationMs": 600, "streamIdleTimeoutMs": 300, "midStream": "continue"}
    a, b, p = two_entries(fake, proxy, reply, settings)
    started = time.monotonic()
    with pytest.raises(openai.APIError) as caught:  # what an SDK user sees
        for _ in p.openai().chat.completions.create(model="main", messages=HELLO, stream=True):
            pass
    assert caught.value.code == "stream_too_long"
    assert 0.55 < time.monotonic() - started < 3
    text, _, events = stream(p)
    assert text.startswith(" more more")
    assert error_code(events) == "stream_too_long"
    assert "streamMaxDurationMs" in json.loads(events[-1])["error"]["message"]
    assert not [r for r in b.requests if r.json().get("stream")]  # never continued elsewhere


@pytest.mark.parametrize(
    "oversize",
    [
        "data: " + json.dumps(content("z" * 100_000)) + "\n\n",  # one event, in one chunk
        "data: " + "z" * 100_000,  # a line that never ends, in one chunk
    ],
    ids=["event", "endless-line"],
)
def test_an_event_over_the_limit_after_the_first_token_interrupts_the_stream(fake, proxy, oversize):
    reply = Reply(chunks=[ROLE, content("one"), oversize], forever="z" * 1000, chunk_delay=0.01)
    a, b, p = two_entries(fake, proxy, reply, {"maxSseEventBytes": 64 * KIB})
    text, _, events = stream(p)
    assert text == "one"
    assert error_code(events) == "stream_interrupted"
    assert "maxSseEventBytes" in json.loads(events[-1])["error"]["message"]


def test_a_deeply_nested_event_after_the_first_token_is_dropped_and_the_stream_goes_on(fake, proxy):
    chunks = [
        ROLE,
        content("good"),
        "data: " + deep_json(100_000) + "\n\n",
        content(" answer", "stop"),
        "data: [DONE]\n\n",
    ]
    a, b, p = two_entries(fake, proxy, Reply(chunks=chunks))
    text, headers, events = stream(p)
    assert text == "good answer"
    assert events[-1] == "[DONE]"
    assert not any("[[[" in e for e in events)
    assert headers["x-429chain-trace"] == "a/model-a=200"


def test_a_stream_longer_than_the_body_limit_is_relayed_whole(fake, proxy):
    # The body limit bounds what is held before the first token, not what is relayed.
    words = [f" w{i:04d}" + "." * 500 for i in range(200)]  # ~100 KB of content
    # Spaced out, so the first read (which the limit counts whole) is not all of it.
    reply = Reply.stream("", pieces=words, chunk_delay=0.001)
    a, b, p = two_entries(fake, proxy, reply, {"maxUpstreamBodyBytes": 64 * KIB})
    text, headers, events = stream(p)
    assert text == "".join(words)
    assert events[-1] == "[DONE]"
