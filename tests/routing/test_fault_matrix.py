"""The fault matrix (issue 14): every way a provider fails, as a client of chain429 lives it.

Each fault of the shipped catalogue (chain429.fakes.faults) is played by the
chain's first entry, `a`; the fallback `b` is healthy and takes an assistant
prefill (`supportsPrefill: true`). A real chain429 serves the chain; the
official `openai` SDK is the client, plain and streaming. Each row says what
the client receives (the complete answer or a clean error), how many calls
each fake saw and how long it took (generous bounds: the machine is shared).
Every row also holds the "never hammered" rule: no entry gets more than two
calls within 1.5 s (a sequence waits 2 s after each answer, as a calm client).

Two configurations:
- DEFAULTS: what the defaults rescue, which is what a plain waterfall can;
- TUNED: the defaults plus `midStream: continue`, `retry.attempts: 1` and
  `retry.shortWaitMs: 3000`, under which every row gives the complete answer
  (a content-filter refusal: the clean error).

The whole matrix (2 configurations x 16 faults x plain/stream) runs at once,
in about as long as its slowest row (a hung provider: the 30 s request timeout).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from chain429.config.model import Config
from chain429.fakes.faults import ANSWER, FAULTS
from chain429.fakes.matrix import PROMPT, Call, Received, RunResult, run_matrix

A, B = "a/model-a", "b/model-b"
DEFAULTS: dict[str, Any] = {}
TUNED: dict[str, Any] = {"midStream": "continue", "retry": {"attempts": 1, "shortWaitMs": 3000}}


def config(settings: dict[str, Any]) -> Config:
    """Chain a -> b. The URLs are placeholders: the matrix points them at its fake."""
    return Config.model_validate(
        {
            "version": 1,
            "settings": settings,
            "providers": [
                {"id": "a", "type": "generic-openai", "baseUrl": "http://127.0.0.1:9/v1"},
                {
                    "id": "b",
                    "type": "generic-openai",
                    "baseUrl": "http://127.0.0.1:9/v1",
                    "supportsPrefill": True,
                },
            ],
            "chains": [
                {
                    "name": "main",
                    "entries": [
                        {"provider": "a", "model": "model-a"},
                        {"provider": "b", "model": "model-b"},
                    ],
                }
            ],
        }
    )


class SdkClient:
    """The official openai SDK as the matrix's client: no retries of its own."""

    def __init__(self) -> None:
        self.clients: dict[str, openai.AsyncOpenAI] = {}

    async def __call__(self, call: Call) -> Received:
        sdk = self.clients.get(call.base_url)
        if sdk is None:
            sdk = openai.AsyncOpenAI(base_url=call.base_url, api_key=call.api_key, max_retries=0)
            self.clients[call.base_url] = sdk
        started = time.monotonic()
        headers: Any = {}

        def got(outcome: Any, status: int | None = 200, **kw: Any) -> Received:
            return Received(
                outcome,
                time.monotonic() - started,
                status,
                provider=headers.get("x-429chain-provider"),
                trace=headers.get("x-429chain-trace"),
                **kw,
            )

        create = dict(model=call.model, messages=PROMPT, timeout=call.timeout_s)
        try:
            async with asyncio.timeout(call.timeout_s):
                if not call.stream:
                    raw = await sdk.chat.completions.with_raw_response.create(**create)
                    headers = raw.headers
                    choice = raw.parse().choices[0]
                    text = choice.message.content or ""
                    return got(Received.judge(text, bool(choice.finish_reason)), text=text)
                text, finished = "", False
                async with sdk.chat.completions.with_streaming_response.create(
                    stream=True, **create
                ) as raw:
                    headers = raw.headers
                    try:
                        async for chunk in await raw.parse():
                            for choice in chunk.choices:
                                text += choice.delta.content or ""
                                finished = finished or bool(choice.finish_reason)
                    except openai.APIError as err:  # the stream's error event
                        return got("error", code=err.code, text=text)
                return got(Received.judge(text, finished), text=text)
        except openai.APIStatusError as err:
            headers = err.response.headers
            return got("error", err.status_code, code=err.code)
        except (TimeoutError, openai.APITimeoutError):
            return got("hang", None)
        except (openai.APIConnectionError, httpx.HTTPError):
            return got("truncated", None)  # the connection broke: no answer, no clean error

    async def close(self) -> None:
        for sdk in self.clients.values():
            await sdk.close()


SETUPS = {"defaults": DEFAULTS, "tuned": TUNED}
Runs = dict[tuple[str, bool], RunResult]


async def _play_all() -> dict[str, Runs | BaseException]:
    """Both configurations at once; one that cannot run (a setting this build lacks)
    fails its own rows only."""

    async def one(settings: dict[str, Any]) -> Runs:
        client = SdkClient()
        try:
            runs = await run_matrix(config(settings), client=client)
        finally:
            await client.close()
        return {(r.fault, r.stream): r for r in runs}

    results = await asyncio.gather(
        *(one(settings) for settings in SETUPS.values()), return_exceptions=True
    )
    return dict(zip(SETUPS, results, strict=True))


@pytest.fixture(scope="module")
def played() -> Iterator[dict[str, Runs | BaseException]]:
    started = time.monotonic()
    results = asyncio.run(_play_all())
    print(f"\nfault matrix: {len(SETUPS)} configurations in {time.monotonic() - started:.1f} s")
    yield results


def runs_of(played: dict[str, Runs | BaseException], setup: str) -> Runs:
    runs = played[setup]
    if isinstance(runs, BaseException):
        raise runs
    return runs


@dataclass(frozen=True)
class Row:
    """What the client must receive for one fault, plain or streaming."""

    answered_by: tuple[str, ...] | str | None  # per request (or for all); None: an error
    calls: dict[str, int]
    within_s: float  # the whole run, every request of it
    code: str | None = None  # the clean error's code
    at_least_s: float = 0.0  # it really waited (a short Retry-After)
    first_trace: str | None = None


def both(row: Row) -> dict[bool, Row]:
    return {False: row, True: row}


def kinds(plain: Row, stream: Row) -> dict[bool, Row]:
    return {False: plain, True: stream}


# fault -> stream? -> Row, with the defaults
EXPECT_DEFAULTS: dict[str, dict[bool, Row]] = {
    "429-short": both(Row(B, {A: 1, B: 1}, 5, first_trace=f"{A}=429,{B}=200")),
    "429-long": both(Row(B, {A: 1, B: 1}, 5)),
    "429-no-hint": both(Row(B, {A: 1, B: 3}, 10, first_trace=f"{A}=429,{B}=200")),
    "500-once": both(Row(B, {A: 1, B: 1}, 5, first_trace=f"{A}=500,{B}=200")),
    "503-outage": both(Row(B, {B: 6}, 20)),  # a's calls: see test_an_outage_trips_the_breaker
    "reset": both(Row(B, {A: 1, B: 1}, 5, first_trace=f"{A}=connection_reset,{B}=200")),
    # requestTimeoutMs (30 s) for a plain call; firstTokenTimeoutMs (10 s) from the send.
    "no-response": kinds(Row(B, {A: 1, B: 1}, 40), Row(B, {A: 1, B: 1}, 14)),
    # A plain answer 20 s late is still inside requestTimeoutMs; a stream's first
    # token 20 s late is not inside firstTokenTimeoutMs: the next entry, in < 12 s.
    "slow-first-token": kinds(Row(A, {A: 1}, 26), Row(B, {A: 1, B: 1}, 12)),
    "stream-cut": kinds(Row(B, {A: 1, B: 1}, 5), Row(None, {A: 1}, 5, code="stream_interrupted")),
    "stream-stall": kinds(Row(B, {A: 1, B: 1}, 40), Row(None, {A: 1}, 26, code="stream_stalled")),
    "malformed-chunk": kinds(Row(B, {A: 1, B: 1}, 5), Row(A, {A: 1}, 5)),
    "no-done": both(Row(A, {A: 1}, 5)),
    "context-length": both(Row(B, {A: 1, B: 1}, 5)),
    "content-filter": both(Row(None, {A: 1}, 5, code="content_filter")),
    "cut-prefill-refused": kinds(
        Row(B, {A: 1, B: 1}, 5), Row(None, {A: 1}, 5, code="stream_interrupted")
    ),
    "flapping": both(Row((B, A, B, A, B, A), {A: 6, B: 3}, 20)),
}

# The same with midStream: continue, retry.attempts: 1, retry.shortWaitMs: 3000
EXPECT_TUNED: dict[str, dict[bool, Row]] = {
    # Waits the 2 s and keeps the preferred entry.
    "429-short": both(Row(A, {A: 2}, 6, at_least_s=1.5, first_trace=f"{A}=429,{A}=200")),
    "429-long": both(Row(B, {A: 1, B: 1}, 5)),
    "429-no-hint": both(Row(B, {A: 1, B: 3}, 10)),
    "500-once": both(Row(A, {A: 2}, 5, first_trace=f"{A}=500,{A}=200")),
    "503-outage": both(Row(B, {B: 6}, 25)),
    "reset": both(Row(A, {A: 2}, 5, first_trace=f"{A}=connection_reset,{A}=200")),
    # A timeout is not retried: a slow entry stays slow.
    "no-response": kinds(Row(B, {A: 1, B: 1}, 40), Row(B, {A: 1, B: 1}, 14)),
    "slow-first-token": kinds(Row(A, {A: 1}, 26), Row(B, {A: 1, B: 1}, 12)),
    # Plain: a body cut short is retried; a stream cut mid-answer is finished by b
    # with the partial answer as a prefill.
    "stream-cut": kinds(Row(A, {A: 2}, 5), Row(A, {A: 1, B: 1}, 5)),
    "stream-stall": kinds(Row(B, {A: 1, B: 1}, 40), Row(A, {A: 1, B: 1}, 26)),
    "malformed-chunk": kinds(Row(A, {A: 2}, 5), Row(A, {A: 1}, 5)),
    "no-done": both(Row(A, {A: 1}, 5)),
    "context-length": both(Row(B, {A: 1, B: 1}, 5)),
    "content-filter": both(Row(None, {A: 1}, 5, code="content_filter")),
    # b refuses the prefill (a 400): asked again for a fresh answer, which begins
    # with what the client has, so only the rest is streamed.
    "cut-prefill-refused": kinds(Row(A, {A: 2}, 5), Row(A, {A: 1, B: 2}, 5)),
    # Fails every other call: the retry rescues each request on the preferred entry.
    "flapping": both(Row(A, {A: 12}, 20)),
}

KIND = {False: "plain", True: "stream"}
CASES = [
    pytest.param(setup, fault.name, stream, id=f"{setup}-{fault.name}-{KIND[stream]}")
    for setup in ("defaults", "tuned")
    for fault in FAULTS
    for stream in (False, True)
]


def test_the_expectations_cover_the_whole_catalogue():
    names = [fault.name for fault in FAULTS]
    assert list(EXPECT_DEFAULTS) == names
    assert list(EXPECT_TUNED) == names


@pytest.mark.parametrize(("setup", "fault", "stream"), CASES)
def test_fault(played, setup, fault, stream):
    run = runs_of(played, setup)[(fault, stream)]
    row = (EXPECT_DEFAULTS if setup == "defaults" else EXPECT_TUNED)[fault][stream]
    got = run.received
    shown = [(r.outcome, r.code, r.provider, r.trace, round(r.seconds, 2)) for r in got]
    # Never a hang, never half an answer passed off as whole.
    assert all(r.outcome in ("complete", "error") for r in got), shown
    if row.answered_by is None:
        assert [(r.outcome, r.code) for r in got] == [("error", row.code)] * len(got), shown
        if row.code == "content_filter":
            assert {r.status for r in got} == {400}, shown
    else:
        expected = (
            row.answered_by if isinstance(row.answered_by, tuple) else (row.answered_by,) * len(got)
        )
        assert [(r.outcome, r.provider) for r in got] == [("complete", p) for p in expected], shown
        assert all(r.text == ANSWER for r in got), shown
    if row.first_trace is not None:
        assert got[0].trace == row.first_trace, shown
    counts = run.call_counts()
    for label, count in row.calls.items():
        assert counts.get(label, 0) == count, (counts, shown)
    assert set(counts) <= set(row.calls) | {A}, counts
    assert row.at_least_s <= run.seconds < row.within_s, shown
    assert run.max_calls_in_window() <= 2, run.calls


@pytest.mark.parametrize("setup", ["defaults", "tuned"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_outage_trips_the_breaker(played, setup, stream):
    """A first entry down for good (503 on every call) stops being called on every
    request: after 3 failures in a row it is skipped (`skip:breaker`), probed once
    per interval (5 s, doubling)."""
    run = runs_of(played, setup)[("503-outage", stream)]
    traces = [r.trace or "" for r in run.received]
    assert 1 <= run.call_counts()[A] < len(run.received), traces
    assert any(f"{A}=skip:breaker" in trace for trace in traces), traces
