"""Play the fault catalogue against a config, the way a client would live it.

`run_matrix(config)` answers "what happens to my app when a provider fails
like this?" for every chain of a config and every fault of
`chain429.fakes.faults`, with the chains' real settings and none of their
real providers: each provider is replaced by the shipped fake (a dummy key,
a loopback URL), chain429 itself runs on a free loopback port, and a client
sends each fault's requests, plain and streaming, timing what it gets. Used
by `chain429 selftest` and by tests/routing/test_fault_matrix.py (which
brings the official `openai` SDK as its client).

Every (chain, fault, kind) runs at once against ONE server and ONE fake, so
the whole matrix takes about as long as its slowest row. They cannot disturb
each other: each run gets its own copy of the chain's providers (`id~N`), so
cooldowns, breakers and quotas are its own, and its own URL prefix on the
fake (`/rN/<provider>/v1`), so the fake knows whose call it is.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote

import httpx
import yaml

from chain429.config.errors import ConfigError, ConfigIssue
from chain429.config.loader import parse_config_text, references_in
from chain429.config.model import Chain, Config
from chain429.fakes.faults import ANSWER, FAULTS, Fault, healthy
from chain429.fakes.provider import FakeProvider
from chain429.fakes.replies import ReceivedRequest, Reply, request_model
from chain429.server.app import create_app
from chain429.server.serving import ServerThread

__all__ = [
    "PROMPT",
    "WINDOW_S",
    "Call",
    "Client",
    "Received",
    "RunResult",
    "give_up_after_s",
    "http_client",
    "load_shape",
    "run_matrix",
]

PROXY_KEY = "chain429-selftest-key"
DUMMY_PROVIDER_KEY = "chain429-selftest-dummy-provider-key"  # goes to the fake only
PROMPT = [{"role": "user", "content": "Name a sentence that uses every letter."}]
# "Never hammered": at most two calls to one entry within this many seconds.
WINDOW_S = 1.5

Outcome = Literal["complete", "error", "truncated", "hang"]
# Worst first: a run's verdict is its worst request's outcome.
_SEVERITY: dict[Outcome, int] = {"hang": 3, "truncated": 2, "error": 1, "complete": 0}


@dataclass(frozen=True, slots=True)
class Call:
    """One request the client is to send."""

    base_url: str  # up to /v1
    api_key: str
    model: str  # the chain's name
    stream: bool
    timeout_s: float  # then the client gives up: a hang


@dataclass(frozen=True, slots=True)
class Received:
    """What the client got for one request.

    `complete`: the whole answer (a stream with its [DONE]); `error`: a clean
    error (an HTTP error status, or a stream that ended with an error event,
    which OpenAI's SDKs raise); `truncated`: a success that is not the whole
    answer, the one thing a client cannot notice; `hang`: nothing in time.
    """

    outcome: Outcome
    seconds: float
    status: int | None = None
    code: str | None = None  # the error's code, if any
    text: str = ""
    provider: str | None = None  # X-429chain-Provider
    trace: str | None = None  # X-429chain-Trace

    @staticmethod
    def judge(text: str, finished: bool) -> Outcome:
        """A 200's outcome: complete only if it ended properly with the whole answer."""
        return "complete" if finished and text == ANSWER else "truncated"


Client = Callable[[Call], Awaitable[Received]]


@dataclass(frozen=True)
class RunResult:
    """One fault played on one chain, plain or streaming."""

    chain: str
    fault: str
    stream: bool
    received: tuple[Received, ...]
    calls: dict[str, tuple[float, ...]]  # entry label -> seconds after the run started
    seconds: float  # from the first request to the last answer

    @property
    def verdict(self) -> Outcome:
        return max((r.outcome for r in self.received), key=_SEVERITY.__getitem__)

    @property
    def ok(self) -> bool:
        """No hang and no truncated success: what `selftest` exits 1 for."""
        return _SEVERITY[self.verdict] < _SEVERITY["truncated"]

    def call_counts(self) -> dict[str, int]:
        return {label: len(times) for label, times in self.calls.items()}

    def max_calls_in_window(self, window_s: float = WINDOW_S) -> int:
        """The most calls one entry got within any `window_s` seconds."""
        most = 0
        for times in self.calls.values():
            start = 0
            for end, moment in enumerate(times):
                while moment - times[start] > window_s:
                    start += 1
                most = max(most, end - start + 1)
        return most

    def as_json(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "fault": self.fault,
            "stream": self.stream,
            "verdict": self.verdict,
            "seconds": round(self.seconds, 3),
            "calls": self.call_counts(),
            "maxCallsIn1500ms": self.max_calls_in_window(),
            "requests": [
                {
                    "outcome": r.outcome,
                    "seconds": round(r.seconds, 3),
                    "status": r.status,
                    "code": r.code,
                    "provider": r.provider,
                    "trace": r.trace,
                }
                for r in self.received
            ],
        }


@dataclass
class _Run:
    index: int
    chain: Chain
    fault: Fault
    stream: bool
    first: tuple[str, str]  # (provider id, model) of the chain's first entry
    answer_first: Callable[[ReceivedRequest], Reply]
    answer_other: dict[tuple[str, str], Callable[[ReceivedRequest], Reply]]
    calls: dict[str, list[float]] = field(default_factory=dict)
    started: float = 0.0

    def answer(self, provider: str, request: ReceivedRequest) -> Reply:
        model = request_model(request.body)
        times = self.calls.setdefault(f"{provider}/{model}", [])
        times.append(request.at - self.started)
        if (provider, model) == self.first:
            return self.answer_first(request)
        other = self.answer_other.get((provider, model))
        return other(request) if other else Reply.error(404, f"no entry {provider}/{model}")

    def label(self, value: str | None) -> str | None:
        """A trace or provider header with this run's provider copies named as the user's."""
        return value.replace(f"~{self.index}/", "/") if value is not None else None


# Fields the matrix replaces anyway (`_matrix_config`): a `${VAR}` there that reads
# as empty must not stop a self-test (`baseUrl: ${LOCAL_URL}`, `apiKeys: [${KEY}]`).
_REPLACED = re.compile(
    r"providers\[\d+\]\.(apiKey|baseUrl)|settings\.(apiKeys|adminKeys|databaseUrl|dbPath)(\[\d+\])?"
)
_PLACEHOLDER_URL = "http://127.0.0.1:9/v1"


def load_shape(path: Path) -> Config:
    """The config at `path` as the matrix needs it: its settings and chains, no secret.

    Every `${VAR}` reads as empty (its `:-default` if it has one), and no
    `.env` is read: the matrix replaces each provider's key and URL anyway,
    and a self-test must not be the way a secret leaves the environment.
    Raises ConfigError (file, line, field) for a file that is not a config.
    """
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(str(path), None, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(str(path), None, "", f"cannot read: {exc}")]) from None
    except yaml.YAMLError:
        data = None  # parse_config_text says where and why
    empty = dict.fromkeys(references_in(data), "")
    try:
        return parse_config_text(text, filename=str(path), environ=empty, dotenv_dir=None)
    except ConfigError as err:
        if not isinstance(data, dict) or not all(_REPLACED.fullmatch(i.path) for i in err.issues):
            raise
    # Only fields the matrix replaces were wrong (empty): replace them first.
    patched = copy.deepcopy(data)
    for provider in patched.get("providers") or ():
        if isinstance(provider, dict):
            provider.update(apiKey=DUMMY_PROVIDER_KEY, baseUrl=_PLACEHOLDER_URL)
    if isinstance(patched.get("settings"), dict):
        for key in ("apiKeys", "adminKeys", "databaseUrl", "dbPath"):
            patched["settings"].pop(key, None)
    return parse_config_text(
        yaml.safe_dump(patched), filename=str(path), environ=empty, dotenv_dir=None
    )


def give_up_after_s(config: Config) -> float:
    """How long a client waits for one answer before calling it a hang.

    Longer than anything the config lets one request take when only its first
    entry is in trouble: that entry's longest deadline, twice (a retry), then
    the healthy rest of the chain.
    """
    settings = config.settings
    longest_ms = max(
        [
            settings.request_timeout_ms,
            settings.first_token_timeout_ms,
            settings.stream_idle_timeout_ms,
            *(p.timeout for p in config.providers if p.timeout is not None),
        ]
    )
    return 2 * longest_ms / 1000 + 10.0


def _prefill(config: Config, chain: Chain, index: int) -> bool:
    entry = chain.entries[index]
    if entry.supports_prefill is not None:
        return entry.supports_prefill
    return config.provider(entry.provider).supports_prefill


def _plan(
    config: Config, chains: Sequence[Chain], faults: Sequence[Fault], streams: Sequence[bool]
) -> list[_Run]:
    runs: list[_Run] = []
    for chain in chains:
        for fault in faults:
            for stream in streams:
                first = chain.entries[0]
                others: dict[tuple[str, str], Callable[[ReceivedRequest], Reply]] = {}
                for i, entry in enumerate(chain.entries):
                    accepts = _prefill(config, chain, i) and fault.fallback == "as-configured"
                    others.setdefault((entry.provider, entry.model), healthy(accepts))
                runs.append(
                    _Run(
                        len(runs),
                        chain,
                        fault,
                        stream,
                        (first.provider, first.model),
                        fault.player(_prefill(config, chain, 0)),
                        others,
                    )
                )
    return runs


def _matrix_config(config: Config, runs: Sequence[_Run], fake_root: str) -> Config:
    """The user's settings and chains, one copy per run, every provider a fake."""
    settings = config.settings.model_dump(by_alias=True)
    settings.update(
        apiKeys=[PROXY_KEY],
        adminKeys=[],
        defaultChain=None,
        databaseUrl=None,
        dbPath=None,
        host="127.0.0.1",
    )
    providers, chains = [], []
    for run in runs:
        used = dict.fromkeys(entry.provider for entry in run.chain.entries)
        for pid in used:
            provider = config.provider(pid).model_dump(by_alias=True)
            provider.update(
                id=f"{pid}~{run.index}",
                apiKey=DUMMY_PROVIDER_KEY,
                baseUrl=f"{fake_root}/r{run.index}/{quote(pid, safe='')}/v1",
            )
            providers.append(provider)
        chain = run.chain.model_dump(by_alias=True)
        chain["name"] = f"{run.chain.name}~{run.index}"
        for entry in chain["entries"]:
            entry["provider"] = f"{entry['provider']}~{run.index}"
        chains.append(chain)
    return Config.model_validate(
        {"version": 1, "settings": settings, "providers": providers, "chains": chains}
    )


def _dispatcher(runs: Sequence[_Run]) -> Callable[[ReceivedRequest], Reply]:
    def dispatch(request: ReceivedRequest) -> Reply:
        # /r<run>/<provider>/v1/chat/completions
        parts = request.path.split("/")
        if len(parts) > 3 and parts[1][:1] == "r" and parts[1][1:].isdigit():
            index = int(parts[1][1:])
            if index < len(runs):
                return runs[index].answer(unquote(parts[2]), request)
        return Reply.error(404, f"not a selftest run: {request.path}")

    return dispatch


async def _play(run: _Run, url: str, client: Client, timeout_s: float) -> RunResult:
    run.started = time.monotonic()
    call = Call(f"{url}/v1", PROXY_KEY, f"{run.chain.name}~{run.index}", run.stream, timeout_s)
    received: list[Received] = []
    for n in range(run.fault.requests):
        if n:
            await asyncio.sleep(run.fault.pause_s)
        got = await client(call)
        received.append(
            Received(
                got.outcome,
                got.seconds,
                got.status,
                got.code,
                got.text,
                run.label(got.provider),
                run.label(got.trace),
            )
        )
    return RunResult(
        run.chain.name,
        run.fault.name,
        run.stream,
        tuple(received),
        {label: tuple(times) for label, times in run.calls.items()},
        time.monotonic() - run.started,
    )


async def run_matrix(
    config: Config,
    *,
    faults: Sequence[Fault] = FAULTS,
    chains: Iterable[str] | None = None,
    streams: Sequence[bool] = (False, True),
    client: Client | None = None,
) -> list[RunResult]:
    """Every fault against the first entry of every chat chain (or of `chains`), plain and
    streaming: the faults are a chat client's.

    No network beyond loopback, no key read: the config's providers are
    replaced before chain429 starts. Bounded: a client gives up after
    `give_up_after_s(config)` (a hang), and everything runs at once.
    """
    names = (
        list(chains) if chains is not None else [c.name for c in config.chains if c.kind == "chat"]
    )
    picked = []
    for name in names:
        chain = config.chain(name)
        if chain is None:
            raise KeyError(f"no chain named {name!r}")
        picked.append(chain)
    runs = _plan(config, picked, faults, streams)
    if not runs:
        return []
    fake = FakeProvider("selftest", default=_dispatcher(runs), record=False)
    await asyncio.to_thread(fake.start_in_thread)
    try:
        app = create_app(_matrix_config(config, runs, f"http://{fake.host}:{fake.port}"))
        server = await asyncio.to_thread(ServerThread(app).start)
        try:
            async with httpx.AsyncClient(timeout=None, limits=_NO_POOL_LIMIT) as http:
                send = client or http_client(http)
                timeout_s = give_up_after_s(config)
                # A TaskGroup: a client that raises stops the other plays too.
                async with asyncio.TaskGroup() as group:
                    plays = [
                        group.create_task(_play(run, server.url, send, timeout_s)) for run in runs
                    ]
                return [play.result() for play in plays]
        finally:
            await asyncio.to_thread(server.stop)
    finally:
        await asyncio.to_thread(fake.stop_thread)


# Every run's requests are in flight at once; none may wait for a pooled connection.
_NO_POOL_LIMIT = httpx.Limits(max_connections=None, max_keepalive_connections=None)


# -- the client without an SDK: raw HTTP, as any OpenAI-compatible client sees it --


def _error_code(body: bytes) -> str | None:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    return str(code) if code is not None else None


def http_client(http: httpx.AsyncClient) -> Client:
    """A client that sends each chat request with `http` and says what came back."""

    async def send(call: Call) -> Received:
        return await _send(http, call)

    return send


async def _send(http: httpx.AsyncClient, call: Call) -> Received:
    started = time.monotonic()
    body = {"model": call.model, "messages": PROMPT, "stream": call.stream}
    headers = {"authorization": f"Bearer {call.api_key}"}
    status: int | None = None
    got: dict[str, str] = {}

    def received(outcome: Outcome, **kw: Any) -> Received:
        return Received(
            outcome,
            time.monotonic() - started,
            status,
            provider=got.get("x-429chain-provider"),
            trace=got.get("x-429chain-trace"),
            **kw,
        )

    try:
        async with (
            asyncio.timeout(call.timeout_s),
            http.stream(
                "POST", f"{call.base_url}/chat/completions", json=body, headers=headers
            ) as response,
        ):
            status, got = response.status_code, dict(response.headers)
            if status != 200:
                return received("error", code=_error_code(await response.aread()))
            if not call.stream:
                data = json.loads(await response.aread())
                choice = data["choices"][0]
                text = choice["message"].get("content") or ""
                return received(Received.judge(text, bool(choice.get("finish_reason"))), text=text)
            text, done = "", False
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    continue
                event = json.loads(payload)
                if "error" in event:
                    code = _error_code(payload.encode())
                    return received("error", code=code, text=text)
                for choice in event.get("choices") or ():
                    text += (choice.get("delta") or {}).get("content") or ""
            return received(Received.judge(text, done), text=text)
    except TimeoutError:
        return received("hang")
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        return received("truncated")  # a broken body or connection after a 200
