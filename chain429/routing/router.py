"""The waterfall: pick a chain, walk its entries, answer from the first that works.

For each entry the router asks the state store whether it may be asked, calls
it through `Upstream`, classifies the answer and reports the outcome back.
The walk itself (`Waterfall.walk`) does not know how an entry is asked, so the
streaming path plugs a different `attempt` into the same walk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from chain429.config.model import ChainKind
from chain429.routing import endpoints
from chain429.routing.attempts import ask_entry, post_and_classify
from chain429.routing.budget import SpendPlan, estimate_usd, plan_spend
from chain429.routing.endpoints import Endpoint
from chain429.routing.known_skips import KnownSkips, lasting, remember
from chain429.routing.limits import Block, StateStore
from chain429.routing.outcome import BlockReason, CooldownPolicy, Kind, Outcome, Tried
from chain429.routing.queueing import QueueError, Queues
from chain429.routing.runtime import ChainRuntime, EntryRuntime, Snapshot
from chain429.routing.streaming import Committed, Rejected, StreamSession
from chain429.routing.trace import Trace
from chain429.upstream import provider_json
from chain429.upstream.client import Upstream, UpstreamReply
from chain429.upstream.openai_error import error_body

T = TypeVar("T")
# Why a request went to its chain: `model` named it, named an alias of it, named an
# entry model, or none of these.
Route = Literal["chain", "alias", "model", "default"]
log = logging.getLogger("chain429.routing.router")


@dataclass(frozen=True, slots=True)
class Answer(Generic[T]):
    """The end of a walk: the entry that answered and what it answered, or nothing."""

    entry: EntryRuntime | None
    outcome: Outcome | None
    result: T | None
    wait_for_free_until: float | None = None  # set when a paid entry should wait


Attempt = Callable[[EntryRuntime], Awaitable[Tried[T]]]


_BUDGET_SKIP = f"skip:{BlockReason.BUDGET}"

# A cooldown skip that may be waited for (`retry.shortWaitMs`): a rate limit, not
# a bad key, an empty wallet or a breaker.
_WAITABLE = frozenset({BlockReason.COOLDOWN})


def backoff_s(retry: int) -> float:
    """The pause before the same entry is asked again: 100-400 ms, jittered so that
    requests failing together do not come back together, doubling per further retry."""
    return random.uniform(0.1, 0.4) * 2.0**retry


# After the wait before a paid entry, how much longer a free entry may still
# be waited for: a moment, never a second full wait.
_PAID_GRACE_S = 0.25


async def sleep_until(moment: float) -> None:
    """Sleep until the wall clock reads `moment` (a cooldown's `until`).

    The event loop's timers run on the monotonic clock and may fire a hair
    early against wall-clock times; waking before a cooldown ends would find
    the entry still cooling.
    """
    while (left := moment - time.time()) > 0:
        await asyncio.sleep(left + 0.001)


class Waterfall:
    def __init__(self, state: StateStore) -> None:
        self.state = state
        # Per chain name: its first entries as the last walk found them skipped.
        self._known: dict[str, KnownSkips] = {}

    async def walk(
        self,
        chain: ChainRuntime,
        attempt: Attempt[T],
        trace: Trace,
        *,
        need_tokens: int,
        policy: CooldownPolicy,
        paid_wait_s: float = 0.0,
        budget: int | None = None,
        deadline: float | None = None,
        spend: SpendPlan | None = None,
        cut_off: Callable[[EntryRuntime], None] | None = None,
    ) -> Answer[T]:
        """Try entries in order until one succeeds or answers with a client error.

        Before the first paid entry, if a free entry is known to recover within
        `paid_wait_s`, stop and say so: the caller waits for it instead of paying.
        An entry may be asked more than once (`EntryRuntime.retry_attempts`,
        `short_wait_s`), within `budget` calls and without waiting past `deadline`.
        A paid entry is asked only if its estimated cost fits the request's paid
        budgets (`spend`); else it is skipped (`skip:budget`). An entry whose call the
        client cuts off is told to `cut_off`.

        The chain's first entries, when the last walk found them skipped and
        nothing but time has changed since, are taken as skipped without asking
        (known_skips.py); a walk that starts afresh remembers them for the next.
        """
        budget = budget if budget is not None else len(chain.entries) + 2
        calls = 0
        entries: Sequence[EntryRuntime] = chain.entries
        # This walk's leading lasting skips (those it took as known first), while
        # it may still remember them for the next walk.
        run: list[Block] | None = None
        taken = None
        if not trace.trail and budget > 0:
            taken = self._known.get(chain.name)
            if taken is not None and taken.hold(chain, time.time(), self.state):
                trace.take_known(taken)
                entries = entries[len(taken.steps) :]
                run = list(taken.blocks)
            else:
                taken, run = None, []
        for entry in entries:
            free_at = trace.free_recovery
            if (
                entry.paid
                and paid_wait_s > 0
                and free_at is not None
                and free_at - time.time() <= paid_wait_s
            ):
                self._remember(chain, trace, run, taken)
                return Answer(None, None, None, wait_for_free_until=free_at)
            tries = _Tries()
            while True:
                if calls >= budget:
                    self._remember(chain, trace, run, taken)
                    run = None
                    trace.over_budget(entry, budget)
                    break
                asked = await ask_entry(
                    self.state,
                    entry,
                    attempt,
                    need_tokens=need_tokens,
                    policy=policy,
                    spend=spend,
                    cut_off=cut_off,
                )
                if isinstance(asked, Block):
                    trace.skip(entry, asked)
                    if run is not None:
                        if lasting(entry, asked, _WAITABLE):
                            run.append(asked)
                        else:
                            self._remember(chain, trace, run, taken)
                            run = None
                    if asked.reason in _WAITABLE and await self._wait_out(
                        entry, tries, asked.until, deadline
                    ):
                        continue
                    break
                self._remember(chain, trace, run, taken)
                run = None
                calls += 1
                # When it ended: the provider got it before then, so the spacing
                # holds as the provider sees it, whatever the connection took.
                tries.calls.append(time.time())
                outcome = asked.tried.outcome
                trace.called(entry, outcome, asked.latency_ms, asked.applied)
                if outcome.kind is Kind.SUCCESS:
                    trace.open.append(asked.reservation)
                if not outcome.falls_through:
                    return Answer(entry, outcome, asked.tried.result)
                if calls < budget and await self._again(
                    entry, tries, outcome, asked.applied, deadline
                ):
                    continue
                log.info(
                    "%s answered %s (%s); trying the next entry",
                    entry.label,
                    outcome.token,
                    outcome.reason,
                )
                break
        self._remember(chain, trace, run, taken)
        return Answer(None, None, None)

    def _remember(
        self, chain: ChainRuntime, trace: Trace, run: list[Block] | None, taken: KnownSkips | None
    ) -> None:
        """Keep this walk's leading lasting skips (`run`) for the chain's next walk (or
        forget what was kept, when there were none). `run` None: nothing to keep;
        no more than it `taken` as known: what is kept already."""
        if run is None or (taken is not None and len(run) == len(taken.blocks)):
            return
        known = remember(chain, trace.trail[: len(run)], run, self.state) if run else None
        if known is None:
            self._known.pop(chain.name, None)
        else:
            self._known[chain.name] = known

    async def _again(
        self,
        entry: EntryRuntime,
        tries: _Tries,
        outcome: Outcome,
        applied: Block | None,
        deadline: float | None,
    ) -> bool:
        """Whether to ask the entry again after this failure (having waited if so):
        a 429 that ends within `shortWaitMs`, or a retryable failure within `attempts`."""
        if outcome.kind is Kind.RATE_LIMITED:
            until = applied.until if applied is not None else outcome.until
            return until is not None and await self._wait_out(entry, tries, until, deadline)
        if not outcome.retryable or tries.retries >= entry.retry_attempts:
            return False
        now = time.time()
        pause = max(backoff_s(tries.retries), tries.spacing_s(now))
        if deadline is not None and now + pause > deadline:
            return False
        tries.retries += 1
        log.info(
            "%s answered %s; asking it again in %.0f ms (retry %d of %d)",
            entry.label,
            outcome.token,
            pause * 1000,
            tries.retries,
            entry.retry_attempts,
        )
        await asyncio.sleep(pause)
        return True

    @staticmethod
    async def _wait_out(
        entry: EntryRuntime, tries: _Tries, until: float, deadline: float | None
    ) -> bool:
        """Wait for a rate limit that ends within the entry's `shortWaitMs` (and before
        the request's deadline), once per entry; False, at once, otherwise."""
        now = time.time()
        if tries.waited or until - now > entry.short_wait_s:
            return False
        until = max(until, now + tries.spacing_s(now))
        if deadline is not None and until > deadline:
            return False
        tries.waited = True
        log.info("%s is rate limited for %.1f s more; waiting for it", entry.label, until - now)
        await sleep_until(until)
        return True


# However retries and waits combine, one request never makes a third call to an
# entry within this long of the call two before it: a provider in trouble is
# not hammered (two calls in 1.5 s at most).
_SPACING_S = 1.5


@dataclass(slots=True)
class _Tries:
    """One walk's calls to one entry, for its retry policy."""

    retries: int = 0  # retries after transient failures (`retry.attempts`)
    waited: bool = False  # whether a short 429 has been waited for (`retry.shortWaitMs`)
    calls: list[float] = field(default_factory=list)  # when each call ended

    def spacing_s(self, now: float) -> float:
        """How long the next call must still wait to keep `_SPACING_S`."""
        if len(self.calls) < 2:
            return 0.0
        return max(0.0, self.calls[-2] + _SPACING_S - now)


@dataclass(frozen=True, slots=True)
class StreamStart:
    """A stream past its commit point: send `headers`, then `session.relay(committed, ...)`."""

    headers: dict[str, str]
    session: StreamSession
    committed: Committed

    @property
    def entry(self) -> EntryRuntime:
        return self.committed.entry


@dataclass(frozen=True, slots=True)
class Reply:
    """What the server sends back for a non-streaming completion."""

    status: int
    body: bytes
    headers: dict[str, str]
    outcome: str  # for the request log: success, client_error, all_providers_exhausted
    entry: EntryRuntime | None = None  # who answered, if anyone


class Router:
    def __init__(self, upstream: Upstream, state: StateStore) -> None:
        self.upstream = upstream
        self.waterfall = Waterfall(state)
        self.queues = Queues()

    @property
    def queue_depth(self) -> int:
        return self.queues.depth

    async def _walk(
        self,
        snapshot: Snapshot,
        chain: ChainRuntime,
        request: dict[str, Any],
        attempt: Attempt[T],
        trace: Trace,
        max_wait_s: float | None = None,
        spend: SpendPlan | None = None,
        endpoint: Endpoint = Endpoint.CHAT,
    ) -> Answer[T]:
        """Walk the chain; in queue mode, wait in line for a recovery and walk again.

        A request queues only when every entry was skipped or failed for a rate
        limit (so a recovery time is known), and only when that recovery comes
        within its allowed wait (`queueMaxWaitMs`, shortened by the client's
        `X-429chain-Max-Wait`). Otherwise it is answered at once.
        """
        settings = snapshot.config.settings
        started = time.time()
        allowed_s = settings.queue_max_wait_ms / 1000
        if max_wait_s is not None:
            allowed_s = min(allowed_s, max_wait_s)
        deadline = started + allowed_s
        # Retries' pauses and short waits stay within the client's wait (or the queue's).
        walk_deadline = deadline if settings.queue_mode or max_wait_s is not None else None
        walk = self._walker(
            snapshot, chain, request, attempt, trace, walk_deadline, spend, endpoint
        )
        answer = await walk()
        if answer.entry is not None or not settings.queue_mode or not trace.only_rate_limits:
            return answer
        recovery = trace.earliest_recovery
        if recovery is None:
            return answer
        if recovery > deadline:
            raise QueueError("queue_timeout", "No entry recovers within the allowed wait.")
        ticket = self.queues.enter(chain.name, settings.queue_max_size)
        log.info(
            "chain %s exhausted; queued until about %.1f s from now",
            chain.name,
            recovery - time.time(),
        )
        try:
            while True:
                await ticket.turn(recovery, deadline)
                trace.earliest_recovery = trace.free_recovery = None
                answer = await walk()
                if answer.entry is not None or not trace.only_rate_limits:
                    return answer
                if trace.earliest_recovery is None:
                    return answer
                recovery = trace.earliest_recovery
                if recovery > deadline:
                    raise QueueError("queue_timeout", "No entry recovers within the allowed wait.")
        finally:
            trace.queued_ms += (time.perf_counter() - ticket.entered_at) * 1000
            ticket.leave()

    def _walker(
        self,
        snapshot: Snapshot,
        chain: ChainRuntime,
        request: dict[str, Any],
        attempt: Attempt[T],
        trace: Trace,
        deadline: float | None = None,
        spend: SpendPlan | None = None,
        endpoint: Endpoint = Endpoint.CHAT,
    ) -> Callable[[], Awaitable[Answer[T]]]:
        """One walk of the chain, waiting for a free entry rather than paying.

        The wait before a paid entry is spent once (`waitBeforePaidMs`); after
        it, a free entry found cooling for only a moment longer (a new
        cooldown's jitter, say) is still waited for, up to `_PAID_GRACE_S`,
        rather than paid for.
        """
        paid_wait_s = snapshot.config.settings.wait_before_paid_ms / 1000
        need_tokens = endpoints.reservation(endpoint, request)
        budget = snapshot.config.settings.max_attempts_per_request

        def cut_off(entry: EntryRuntime) -> None:  # what the call the client cut may cost
            trace.cut_off_usd = estimate_usd(entry, endpoint, request)

        async def walk() -> Answer[T]:
            nonlocal paid_wait_s
            while True:
                answer = await self.waterfall.walk(
                    chain,
                    attempt,
                    trace,
                    need_tokens=need_tokens,
                    policy=snapshot.policy,
                    paid_wait_s=paid_wait_s,
                    budget=budget,
                    deadline=deadline,
                    spend=spend,
                    cut_off=cut_off,
                )
                if answer.wait_for_free_until is None:
                    if answer.entry is not None:
                        self.queues.notify()
                    return answer
                log.info(
                    "waiting %.1f s for a free entry before paying",
                    answer.wait_for_free_until - time.time(),
                )
                await sleep_until(answer.wait_for_free_until)
                paid_wait_s = min(paid_wait_s, _PAID_GRACE_S)
                trace.earliest_recovery = trace.free_recovery = None

        return walk

    @staticmethod
    def pick_chain(
        snapshot: Snapshot, model: object, kind: ChainKind = "chat"
    ) -> tuple[ChainRuntime, Route] | None:
        """The chain `model` selects for a request that `kind` of chain serves, and why
        (docs/api.md, "Choosing a chain").

        A chain's name picks it; an alias picks the chain it names (before an
        entry model of the same name: the alias was written to catch it); an
        entry model picks every entry serving it, whatever their kind (the caller
        refuses the wrong one by name); anything else gets the default chain if it
        is of `kind`, or nothing when models are strict.
        """
        if isinstance(model, str):
            if model in snapshot.chains:
                return snapshot.chains[model], "chain"
            if model in snapshot.aliases:
                return snapshot.aliases[model], "alias"
            if model in snapshot.model_chains:
                return snapshot.model_chains[model], "model"
        default = snapshot.default_chain
        if snapshot.config.settings.strict_models or default is None or default.kind != kind:
            return None
        return default, "default"

    async def stream(
        self,
        snapshot: Snapshot,
        chain: ChainRuntime,
        request: dict[str, Any],
        trace: Trace,
        max_wait_s: float | None = None,
        client: str | None = None,
        endpoint: Endpoint = Endpoint.CHAT,
    ) -> Reply | StreamStart:
        """Walk the chain until an entry sends its first token; the caller relays the rest.
        `client` (a `clients:` name) brings its own paid budget."""
        retry_max_wait = snapshot.config.settings.client_retry_max_wait_ms / 1000
        spend = plan_spend(snapshot, request, client, endpoint)
        session = StreamSession(
            snapshot, chain, request, self.upstream, self.waterfall.state, trace, spend, endpoint
        )
        try:
            answer = await self._walk(
                snapshot, chain, request, session.open_entry, trace, max_wait_s, spend, endpoint
            )
        except QueueError as err:
            return exhausted(chain, trace, retry_max_wait, err.code, err.message)
        if answer.entry is None or answer.outcome is None:
            return exhausted(chain, trace, retry_max_wait)
        headers = trace.headers(answer.entry.label)
        if isinstance(answer.result, Rejected):
            # The request itself is wrong (400, 422): the client gets the answer unchanged.
            return Reply(
                answer.result.status, answer.result.body, headers, "client_error", answer.entry
            )
        assert isinstance(answer.result, Committed)
        return StreamStart(headers, session, answer.result)

    async def complete(
        self,
        snapshot: Snapshot,
        chain: ChainRuntime,
        request: dict[str, Any],
        trace: Trace,
        max_wait_s: float | None = None,
        client: str | None = None,
        endpoint: Endpoint = Endpoint.CHAT,
    ) -> Reply:
        """Run one non-streaming request on `endpoint` down the chain; `client` as for
        `stream`."""
        policy = snapshot.policy
        if "stream_options" in request:  # OpenAI refuses it without `stream: true`
            request = {key: value for key, value in request.items() if key != "stream_options"}
        retry_max_wait = snapshot.config.settings.client_retry_max_wait_ms / 1000
        max_bytes = snapshot.config.settings.max_upstream_body_bytes

        async def attempt(entry: EntryRuntime) -> Tried[UpstreamReply]:
            payload = json.dumps({**request, "model": entry.model}).encode()
            return await post_and_classify(
                self.upstream, entry, payload, policy=policy, max_bytes=max_bytes, endpoint=endpoint
            )

        try:
            spend = plan_spend(snapshot, request, client, endpoint)
            answer = await self._walk(
                snapshot, chain, request, attempt, trace, max_wait_s, spend, endpoint
            )
        except QueueError as err:
            return exhausted(chain, trace, retry_max_wait, err.code, err.message)
        if answer.entry is None or answer.result is None or answer.outcome is None:
            return exhausted(chain, trace, retry_max_wait)
        status, body = answer.result.status, answer.result.body
        headers = trace.headers(answer.entry.label)
        if answer.outcome.kind is Kind.CLIENT_ERROR:
            return Reply(status, body, headers, "client_error", answer.entry)
        if snapshot.config.settings.normalize_responses and endpoint is Endpoint.CHAT:
            body = normalize_reasoning(body)
        return Reply(status, body, headers, "success", answer.entry)


def exhausted(
    chain: ChainRuntime,
    trace: Trace,
    retry_max_wait_s: float,
    code: str = "all_providers_exhausted",
    why: str | None = None,
) -> Reply:
    """503 in OpenAI's error shape, saying what each entry did and when to come back;
    a `skip:budget` says which budget and what is left of it, since that decides what
    the client does next.

    When a person paused every entry, it says so: no wait will help, so the
    client is told not to retry (`x-should-retry: false`), until someone resumes one.
    """
    summary = ", ".join(
        f"{a.provider}/{a.model}: {a.outcome}"
        + (f" ({a.reason})" if a.outcome == _BUDGET_SKIP and a.reason else "")
        for a in trace.trail
    )
    message = f"All providers in chain '{chain.name}' are exhausted ({summary})."
    headers = {**trace.headers(None), **retry_advice(trace.earliest_recovery, retry_max_wait_s)}
    paused = f"skip:{BlockReason.PAUSED}"
    if trace.trail and all(a.outcome == paused for a in trace.trail):
        labels = ", ".join(dict.fromkeys(f"{a.provider}/{a.model}" for a in trace.trail))
        message = (
            f"Every entry of chain '{chain.name}' is paused ({labels}); "
            "resume one with `chain429 entry resume PROVIDER[/MODEL]`."
        )
        headers["x-should-retry"] = "false"
    if why:
        message = f"{why} {message}"
    return Reply(503, error_body(message, "server_error", code), headers, code)


def retry_advice(recovery: float | None, max_wait_s: float) -> dict[str, str]:
    """What a 503 tells the client about coming back (docs/api.md, "Retrying").

    `Retry-After` (whole seconds, rounded up) whenever a recovery is known,
    for clients that plan. OpenAI's SDKs retry a 503 twice by default and
    honour `Retry-After` up to a minute each time, so a chain that recovers
    in minutes would hold `create()` for minutes: past `max_wait_s` the answer
    says `x-should-retry: false` and the SDK raises at once. Sooner, it says
    `true`, with `retry-after-ms` so the SDK's retry lands just after the
    recovery rather than up to a second late.
    """
    if recovery is None:
        return {}
    wait = max(0.0, recovery - time.time())
    headers = {"Retry-After": str(max(1, math.ceil(wait)))}
    if wait > max_wait_s:
        headers["x-should-retry"] = "false"
    else:
        headers["x-should-retry"] = "true"
        headers["retry-after-ms"] = str(math.ceil(wait * 1000) + _RETRY_MARGIN_MS)
    return headers


# A retry timed to the millisecond could still arrive a hair early (clocks,
# jitter in the SDK's own sleep): land a little after the recovery instead.
_RETRY_MARGIN_MS = 50


def normalize_reasoning(body: bytes) -> bytes:
    """Move `reasoning_content` into an empty `content`, for clients that read only content."""
    data = provider_json.parse(body)
    if not isinstance(data, dict):
        return body
    changed = False
    for choice in data.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and not message.get("content"):
            reasoning = message.get("reasoning_content")
            if reasoning:
                message["content"] = reasoning
                message.pop("reasoning_content")
                changed = True
    return (provider_json.encode(data) or body) if changed else body
