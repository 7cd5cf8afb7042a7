"""The fault catalogue: every way a provider fails that a router must survive.

One definition, played by the fault-matrix tests (tests/routing/test_fault_matrix.py)
and by `chain429 selftest` against the shape of a user's own config
(`chain429.fakes.matrix` runs it). A fault says what the *first* entry of a
chain plays, call by call, as a script of the shipped fake (so
`chain429 fake` can play each one too: `Fault.cli` spells it); every other
entry is a healthy provider that answers the same text, as a deterministic
model would, so a client can tell a complete answer from a truncated one
whoever gave it.

What the client *should* get is not written here: that is the policy
(docs/failover.md) and the tests' business. Here is only what the provider does.
"""

from __future__ import annotations

import dataclasses
import itertools
import shlex
from collections.abc import Callable, Iterator
from typing import Literal

from chain429.fakes.replies import ReceivedRequest, Reply
from chain429.fakes.script import FakeScript, ReplySource, Step

__all__ = ["ANSWER", "FAULTS", "Fault", "fault_named", "healthy"]

# Every fake of the matrix answers this, word by word in a stream (9 words:
# a role chunk, 9 content chunks, a finish chunk, [DONE]). The same text from
# every entry is what lets a stream cut on one entry be finished, or
# restarted, on another and still read as one answer.
ANSWER = "The quick brown fox jumps over the lazy dog."

# Chunks a cut or stalled stream sends before it dies: the role chunk and
# three words ("The quick brown"), so the client has seen part of the answer.
_PARTIAL = 4

Fallback = Literal["as-configured", "rejects-prefill"]


@dataclasses.dataclass(frozen=True)
class Fault:
    """One row of the matrix: what the chain's first entry does."""

    name: str
    summary: str  # what the provider does, for a person
    steps: tuple[Step, ...]  # what the first entry plays, call by call (then healthy)
    loop: bool = False  # play the steps again and again (a persistent fault)
    requests: int = 1  # requests the client sends for this fault, one after another
    pause_s: float = 0.0  # seconds the client waits after an answer before the next request
    # What the other entries do with a prefill (a stream's continuation): as
    # their config says (`supportsPrefill`), or refuse it whatever it says.
    fallback: Fallback = "as-configured"

    def script(self) -> FakeScript:
        return FakeScript(self.steps, self.loop)

    def player(self, accepts_prefill: bool) -> Callable[[ReceivedRequest], Reply]:
        """The first entry's answers: the steps in order (again and again with `loop`),
        then a healthy provider's. Called by one fake's event loop only: no lock."""
        sources = [step.reply_source("fault") for step in self.steps for _ in range(step.times)]
        after = healthy(accepts_prefill)
        order: Iterator[ReplySource] = itertools.cycle(sources) if self.loop else iter(sources)

        def play(request: ReceivedRequest) -> Reply:
            source = next(order, after)
            return source if isinstance(source, Reply) else source(request)

        return play

    @property
    def cli(self) -> str:
        """The same fault as `chain429 fake` arguments (docs/fake.md)."""
        replies = " ".join(f"-r {shlex.quote(step.describe())}" for step in self.steps)
        return f"{replies} --loop" if self.loop else replies


def _step(**values: object) -> Step:
    return Step(text=ANSWER, **values)  # type: ignore[arg-type]


# A client that waits 2 s after each answer is an ordinary one: then, with one
# retry, an entry gets at most two calls within 1.5 s: the "never hammered"
# bound (docs/failover.md), which the matrix checks for every row.
_PAUSE_S = 2.0

FAULTS: tuple[Fault, ...] = (
    Fault("429-short", "429 with Retry-After: 2, then fine", (_step(status=429, retry_after="2"),)),
    Fault("429-long", "429 with Retry-After: 60", (_step(status=429, retry_after="60"),)),
    Fault(
        "429-no-hint",
        "429 without any hint, on every call (3 requests, 2 s apart)",
        (_step(status=429),),
        loop=True,
        requests=3,
        pause_s=_PAUSE_S,
    ),
    Fault("500-once", "one 500, then fine", (_step(status=500),)),
    Fault(
        "503-outage",
        "503 on every call (6 requests, 2 s apart)",
        (_step(status=503),),
        loop=True,
        requests=6,
        pause_s=_PAUSE_S,
    ),
    Fault("reset", "connection reset before the headers, then fine", (Step(drop="reset"),)),
    Fault(
        "no-response",
        "accepts the connection, never answers",
        (Step(drop="hang"),),
        loop=True,
    ),
    Fault("slow-first-token", "headers at once, first token after 20 s", (_step(first_token=20),)),
    Fault(
        "stream-cut",
        "connection closed after 3 words (a plain answer: after 4 bytes), then fine",
        (_step(cut_after=_PARTIAL),),
    ),
    Fault(
        "stream-stall",
        "silent after 3 words, connection open (a plain answer: after 4 bytes)",
        (_step(stall_after=_PARTIAL),),
    ),
    Fault(
        "malformed-chunk",
        "an event that is not JSON after 3 words (a plain answer: a broken body), then fine",
        (_step(malformed_after=_PARTIAL),),
    ),
    Fault("no-done", "a complete stream without data: [DONE]", (_step(done=False),)),
    Fault(
        "context-length",
        "400 context_length_exceeded (this model's window is too small)",
        (_step(status=400, error="context-length"),),
    ),
    Fault(
        "content-filter",
        "400 content_filter (the prompt itself is refused)",
        (_step(status=400, error="content-filter"),),
    ),
    Fault(
        "cut-prefill-refused",
        "stream cut after 3 words; the next entry refuses an assistant prefill (400)",
        (_step(cut_after=_PARTIAL),),
        fallback="rejects-prefill",
    ),
    Fault(
        "flapping",
        "503 and 200 in turn (6 requests, 2 s apart)",
        (_step(status=503), _step()),
        loop=True,
        requests=6,
        pause_s=_PAUSE_S,
    ),
)


def fault_named(name: str) -> Fault:
    for fault in FAULTS:
        if fault.name == name:
            return fault
    raise KeyError(f"no fault named {name!r}; faults: {', '.join(f.name for f in FAULTS)}")


def healthy(accepts_prefill: bool) -> Callable[[ReceivedRequest], Reply]:
    """A provider that answers ANSWER; with a prefill, the rest of it, or a 400 refusing it."""
    source = _step(reject_prefill=not accepts_prefill).reply_source("healthy")
    assert not isinstance(source, Reply)
    return source
