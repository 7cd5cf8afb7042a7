"""What the request log keeps: one record per request, with its attempt trail.

The request path fills these in as it goes and hands the finished record to
telemetry without waiting; nothing here touches the database.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


# 8 random hex digits per process, then a counter: unique across instances and
# workers without coordination, and no system call per request (os.urandom was
# 2 % of a request's CPU time).
def _new_tag() -> None:
    global _PROCESS_TAG, _SEQUENCE
    _PROCESS_TAG = os.urandom(4).hex()
    _SEQUENCE = itertools.count(int.from_bytes(os.urandom(3), "big"))


_PROCESS_TAG = ""
_SEQUENCE = itertools.count()
_new_tag()
os.register_at_fork(after_in_child=_new_tag)  # a forked worker is another process


def new_request_id() -> str:
    """Sortable by time (ms prefix) and unique without coordination: `req_` + 26 hex digits."""
    return f"req_{int(time.time() * 1000):012x}{_PROCESS_TAG}{next(_SEQUENCE) & 0xFFFFFF:06x}"


# Trail tokens that are not upstream calls: skips (`skip:<reason>`), and the
# note that a stream ended with an error event after its first token.
INTERRUPTED = "interrupted"


def is_call(outcome: str) -> bool:
    """Whether a trail token stands for an upstream call (what `attempts` counts)."""
    return not outcome.startswith("skip:") and outcome != INTERRUPTED


def is_skip(outcome: str) -> bool:
    """Whether a trail token stands for an entry not asked (`skip:<reason>`)."""
    return outcome.startswith("skip:")


@dataclass(slots=True)
class AttemptRecord:
    order: int  # 1-based position in the trail
    provider: str
    model: str
    # trace token: "200", "429", "timeout", "skip:cooldown", "continued:prefill", ...
    outcome: str
    status: int | None = None  # upstream HTTP status, when there was one
    latency_ms: float | None = None  # None for a skip: no call was made
    cooldown_ms: int | None = None  # the cooldown this attempt set, if any
    reason: str = ""


# Every outcome a logged request can have, the one list of them (the stats API's
# `outcome` filter takes these, its OpenAPI document lists them, the web UI reads
# them there; tests/requestlog/test_outcomes.py holds it to the code that sets them):
# answered; the provider's refusal of the request; every entry out, or the queue
# giving up; a stream that ended badly; refused before any provider was asked (the
# error code the client got); or the server's own failure.
REQUEST_OUTCOMES = (
    "success",
    "client_error",
    "all_providers_exhausted",
    "queue_timeout",
    "queue_full",
    "queue_shutdown",
    "stream_stalled",
    "stream_interrupted",
    "stream_too_long",
    "client_disconnected",
    "invalid_api_key",
    "model_not_found",
    "wrong_endpoint",
    "model_not_allowed",
    "client_rate_limited",
    "bad_request",
    "state_store_unavailable",
    "internal_error",
)


@dataclass(slots=True)
class RequestRecord:
    id: str
    started_at: float  # epoch seconds
    key_label: str | None = None  # which client key, never the key itself
    client: str | None = None  # the `clients:` entry whose key it was (migration 4)
    chain: str | None = None
    # Why that chain: "chain" (`model` named it), "alias" (`model` is one of its
    # `aliases`; `requested_model` keeps which), "model" (an entry model: every
    # entry serving it), "default" (`model` named none of these).
    route: str | None = None
    # The proxied route: "chat" (/v1/chat/completions), "completions"
    # (/v1/completions), "embeddings" (/v1/embeddings).
    endpoint: str = "chat"
    requested_model: str | None = None
    provider: str | None = None  # the entry that answered
    model: str | None = None
    status: int = 0  # what the client got
    outcome: str = ""  # one of REQUEST_OUTCOMES
    stream: bool = False
    attempts: int = 0  # upstream calls made
    latency_ms: float = 0.0
    ttft_ms: float | None = None  # streams: time to the first token sent
    queued_ms: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    tokens_estimated: bool = False
    # What the answer cost in US dollars, from its tokens at its entry's price
    # (migration 6); None when unpriced. Estimated when its tokens were.
    cost_usd: float | None = None
    cost_estimated: bool = False
    trail: list[AttemptRecord] = field(default_factory=list)
    # The trail's first steps when the walk took them as known skips
    # (chain429.routing.known_skips): one tuple shared by every request that took
    # them, so the writer encodes and counts them once per batch, not per request.
    leading_skips: tuple[AttemptRecord, ...] = ()


# The skips of a trail are kept in one column of the request's row (`requests.skips`,
# migration 8), not a row each in `attempts`: a chain whose first entries are known
# exhausted skips them on every request, and a row per skip made the log's writes
# grow with the chain (19 skips cost the writer 5x a request's own row). One skip
# is its `SKIP_FIELDS`; the calls keep their rows.
SKIP_FIELDS = ("order", "provider", "model", "outcome", "reason")  # one skip, in order


class SkipEncoder:
    """A trail's skips as the `requests.skips` column holds them (None if none).

    The same skips recur on request after request (an entry known exhausted is
    skipped until it recovers), so each distinct skip's JSON is made once and
    remembered (up to `size` of them): a request's column is then a join.
    `cut` shortens (provider, model, outcome, reason) to their columns' widths,
    as the writer cuts the calls' rows.
    """

    def __init__(
        self, cut: Callable[[tuple[str, ...]], tuple[str, ...]] | None = None, size: int = 1024
    ) -> None:
        self._cut = cut
        self._size = size
        self._known: dict[tuple[str, ...], str] = {}
        # id of a shared tuple of leading skips -> (it, its part of the column)
        self._shared: dict[int, tuple[tuple[AttemptRecord, ...], str]] = {}

    def __call__(
        self, trail: list[AttemptRecord], leading: tuple[AttemptRecord, ...] = ()
    ) -> str | None:
        """`leading`: the trail's first steps, shared by other trails (their part is
        made once per tuple)."""
        parts = []
        if leading:
            parts.append(self._leading(leading))
            trail = trail[len(leading) :]
        known = self._known
        for a in trail:
            if a.outcome.startswith("skip:"):  # is_skip, inline: this runs per step
                key = (a.provider, a.model, a.outcome, a.reason)
                tail = known.get(key)
                if tail is None:
                    tail = self._encode(key)
                parts.append(f"[{a.order},{tail}")
        return f"[{','.join(parts)}]" if parts else None

    def _leading(self, steps: tuple[AttemptRecord, ...]) -> str:
        made = self._shared.get(id(steps))
        if made is None or made[0] is not steps:
            if len(self._shared) >= self._size:
                self._shared.clear()
            joined = self(list(steps))
            assert joined is not None  # known skips are skips
            made = self._shared[id(steps)] = (steps, joined[1:-1])
        return made[1]

    def _encode(self, key: tuple[str, ...]) -> str:
        if len(self._known) >= self._size:
            self._known.clear()
        values = self._cut(key) if self._cut is not None else key
        tail = json.dumps(list(values), separators=(",", ":"))[1:]  # `"p","m","o","r"]`
        self._known[key] = tail
        return tail


def decode_skips(column: str | None) -> list[AttemptRecord]:
    """The skips a `requests.skips` column holds, as trail steps."""
    if not column:
        return []
    steps: list[Any] = json.loads(column)
    return [AttemptRecord(order, provider, model, outcome, reason=reason)
            for order, provider, model, outcome, reason in steps]  # fmt: skip
