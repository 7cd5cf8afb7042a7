"""What a finished stream reports for the request log: tokens, real or estimated."""

from __future__ import annotations

import asyncio

from chain429.config.model import Config
from chain429.fakes.provider import FakeProvider, Reply
from chain429.fakes.replies import deep_json
from chain429.routing.memory_store import MemoryStateStore
from chain429.routing.router import Router, StreamStart
from chain429.routing.runtime import build_snapshot
from chain429.routing.tokens import CHARS_PER_TOKEN, TOKENS_PER_CHAT, TOKENS_PER_MESSAGE
from chain429.routing.trace import Trace
from chain429.upstream.client import Upstream
from fixtures.servers import chain_config

HELLO = [{"role": "user", "content": "a prompt of forty characters, roughly.."}]


async def stream_once(reply, provider_type="generic-openai", settings=None, kept=None, **request):
    async with FakeProvider("p", default=reply) as fake:
        provider = {"id": "p", "type": provider_type, "baseUrl": fake.base_url, "apiKey": "k"}
        config = chain_config([provider], [("p", "m")], settings=settings)
        snapshot = build_snapshot(Config.model_validate(config))
        upstream = Upstream()
        try:
            started = await Router(upstream, MemoryStateStore()).stream(
                snapshot,
                snapshot.chains["main"],
                {"model": "main", "messages": HELLO, "stream": True, **request},
                Trace(),
            )
            assert isinstance(started, StreamStart)
            sent: list[bytes] = []

            async def send(data: bytes) -> None:
                sent.append(data)

            stats = await started.session.relay(started.committed, send)
            if kept is not None:
                kept.extend(started.committed.reader.text)
        finally:
            await upstream.aclose()
    return stats, b"".join(sent)


def test_provider_usage_is_recorded_even_when_stripped_for_the_client():
    usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    stats, sent = asyncio.run(stream_once(Reply.stream("hi there", usage=usage), "openai"))
    assert (stats.prompt_tokens, stats.completion_tokens) == (11, 7)
    assert stats.tokens_estimated is False
    assert b'"usage"' not in sent
    assert stats.end == "done"


def test_without_provider_usage_tokens_are_estimated_and_marked():
    stats, _ = asyncio.run(stream_once(Reply.stream("sixteen chars!!!")))
    assert stats.tokens_estimated is True
    assert stats.completion_tokens == 4  # 16 characters / 4
    # The prompt's text / 4, and what a provider adds around one message.
    text = len(HELLO[0]["content"]) // CHARS_PER_TOKEN
    assert stats.prompt_tokens == text + TOKENS_PER_MESSAGE + TOKENS_PER_CHAT


def test_stats_count_malformed_chunks_and_an_added_done():
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]},
        "data: {broken\n\n",
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    stats, sent = asyncio.run(stream_once(Reply(chunks=chunks)))
    assert stats.malformed_chunks == 1
    assert stats.done_added is True
    assert sent.endswith(b"data: [DONE]\n\n")


def test_a_deeply_nested_event_is_counted_as_malformed_and_the_stream_goes_on():
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]},
        "data: " + deep_json(100_000) + "\n\n",
        {"choices": [{"index": 0, "delta": {"content": "y"}, "finish_reason": "stop"}]},
        "data: [DONE]\n\n",
    ]
    stats, sent = asyncio.run(stream_once(Reply(chunks=chunks)))
    assert stats.malformed_chunks == 1
    assert stats.end == "done"
    assert b"[[[" not in sent and sent.endswith(b"data: [DONE]\n\n")


def test_the_answer_text_kept_is_capped_but_every_character_is_counted():
    kept: list[str] = []
    pieces = ["abcd" * 250] * 8  # 8,000 characters, in 8 events
    settings = {"maxUpstreamBodyBytes": 2048}
    # One event per read (chunk_delay): the limit also bounds what is read before
    # the first token, and the fake would otherwise send all of it in one read.
    reply = Reply.stream("", pieces=pieces, chunk_delay=0.005)
    stats, sent = asyncio.run(stream_once(reply, settings=settings, kept=kept))
    assert stats.end == "done"
    assert sent.count(b"abcd" * 250) == 8  # all relayed
    assert len("".join(kept)) <= 2048  # not all held
    assert stats.completion_tokens == 8000 // 4


def test_one_estimate_for_reservations_and_the_log():
    """chain429.routing.tokens: text parts count, images do not, and max_tokens is reserved."""
    from chain429.routing.tokens import prompt_tokens, reservation

    parts = [{"type": "text", "text": "x" * 40}, {"type": "image_url", "image_url": {"url": "u"}}]
    messages = [{"role": "user", "content": parts}, {"role": "assistant", "content": "y" * 20}]
    around = 2 * TOKENS_PER_MESSAGE + TOKENS_PER_CHAT  # two messages in one chat
    assert prompt_tokens(messages) == 15 + around  # (40 + 20 characters) / 4
    assert reservation({"messages": messages, "max_tokens": 100}) == 115 + around
    reserved = reservation({"messages": messages, "max_completion_tokens": 7, "max_tokens": 9})
    assert reserved == 22 + around
    # An empty message still costs what the provider adds around it.
    assert prompt_tokens([{"role": "user", "content": ""}]) == TOKENS_PER_MESSAGE + TOKENS_PER_CHAT
