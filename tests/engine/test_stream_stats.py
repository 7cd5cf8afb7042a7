"""What a finished stream reports for the request log: tokens, real or estimated."""

from __future__ import annotations

import asyncio

from chain429.config import Config
from chain429.limits import MemoryStateStore
from chain429.router import Router, StreamStart, Trace
from chain429.runtime import build_snapshot
from chain429.testing import FakeProvider, Reply
from chain429.upstream import Upstream
from conftest import chain_config

HELLO = [{"role": "user", "content": "a prompt of forty characters, roughly.."}]


async def stream_once(reply, provider_type="generic-openai", **request):
    async with FakeProvider("p", default=reply) as fake:
        provider = {"id": "p", "type": provider_type, "baseUrl": fake.base_url, "apiKey": "k"}
        snapshot = build_snapshot(Config.model_validate(chain_config([provider], [("p", "m")])))
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
    assert stats.prompt_tokens and stats.prompt_tokens >= 10


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
