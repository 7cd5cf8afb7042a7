"""The self-test's client tells what a client really got, so a broken proxy cannot pass.

Pointed straight at the fake (no chain429 between them), it must call a stream
that stops without its end "truncated", one that never answers "hang", an
error event or status "error", and only the whole answer "complete": these
are the verdicts `chain429 selftest` exits 1 on (hang, truncated) or not.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from chain429.fakes.faults import ANSWER
from chain429.fakes.matrix import Call, Received, RunResult, http_client
from chain429.fakes.provider import FakeProvider, Reply
from chain429.fakes.script import parse_step


def received(reply, *, stream: bool, timeout_s: float = 5.0) -> Received:
    async def ask(url: str) -> Received:
        async with httpx.AsyncClient(timeout=None) as http:
            return await http_client(http)(Call(url, "k", "m", stream, timeout_s))

    with FakeProvider("p", default=reply) as fake:
        return asyncio.run(ask(fake.base_url))


WHOLE = parse_step(f"ok,text={ANSWER}")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_the_whole_answer_is_complete(stream):
    got = received(WHOLE.reply_source("p"), stream=stream)
    assert (got.outcome, got.text, got.status) == ("complete", ANSWER, 200)


@pytest.mark.parametrize(
    ("reply", "stream"),
    [
        # Ends cleanly, [DONE] and all, but it is not the whole answer.
        (Reply.stream("The quick brown"), True),
        # The whole text, no finish and no [DONE]: the stream just stopped.
        (Reply(chunks=Reply.stream(ANSWER).chunks[:-2]), True),
        # The connection closed mid-body.
        (Reply.stream(ANSWER, cut_after=4), True),
        (Reply(body="not json"), False),
    ],
    ids=["short-with-done", "no-finish-no-done", "cut", "plain-junk"],
)
def test_less_than_the_whole_answer_is_truncated(reply, stream):
    assert received(reply, stream=stream).outcome == "truncated"


def test_an_error_event_or_status_is_a_clean_error():
    event = Reply(chunks=[{"error": {"message": "gone", "code": "stream_interrupted"}}])
    got = received(event, stream=True)
    assert (got.outcome, got.code) == ("error", "stream_interrupted")
    got = received(parse_step("400,error=content-filter").reply_source("p"), stream=False)
    assert (got.outcome, got.status, got.code) == ("error", 400, "content_filter")


def test_nothing_in_time_is_a_hang():
    got = received(Reply.hang(), stream=False, timeout_s=0.5)
    assert got.outcome == "hang" and 0.5 <= got.seconds < 2


def run_with(calls: dict[str, tuple[float, ...]], *outcomes: str) -> RunResult:
    got = tuple(Received(o, 0.1) for o in outcomes)  # type: ignore[arg-type]
    return RunResult("c", "f", False, got, calls, 1.0)


def test_a_run_is_as_bad_as_its_worst_request_and_counts_bursts_per_entry():
    run = run_with({"a/m": (0.0, 0.3, 2.0, 2.2, 3.4), "b/m": (0.1, 0.2)}, "complete", "error")
    assert (run.verdict, run.ok) == ("error", True)
    assert run.max_calls_in_window() == 3  # a: 2.0, 2.2, 3.4
    assert run.max_calls_in_window(1.0) == 2
    assert not run_with({}, "complete", "truncated").ok
    assert run_with({}, "error", "hang", "truncated").verdict == "hang"
