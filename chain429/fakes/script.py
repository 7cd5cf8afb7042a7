"""Scripts for the fake provider: what `chain429 fake` answers, request by request.

A user trying a config before spending real quota wants a provider that
misbehaves on cue: a 429 with `Retry-After`, a quota header at zero, a slow
first token, a stream cut after three chunks. A *step* says what one request
gets; a script is steps in order, then plain answers (or the steps again, with
`loop`). Each step answers a streaming request with an SSE stream and any
other with a JSON completion, so one script serves both kinds of client.

On the command line a step is `STATUS`, `ok`, `reset` or `hang`, then
comma-separated `key=value` options::

    429,retry-after=30          200,first-token=20          200,cut=3
    200,header=x-ratelimit-remaining-requests:0,header=x-ratelimit-reset-requests:6m0s
    ok,times=3                  503,delay=2                 200,stall=2
    reset                       hang                        200,malformed=3
    200,done=false              400,error=context-length    200,reject-prefill=true

In a YAML file (`--script`), the same options under their camelCase names::

    replies:
      - {status: 429, retryAfter: 30, times: 2}
      - {firstToken: 20}
      - {cutAfter: 3, text: "a longer answer, cut after its third chunk"}
      - {status: reset}
      - {status: 400, error: content-filter}
    loop: false

A 200 behaves like a model that continues its own answer: a request ending
with an assistant message that the answer's text begins with (a prefill) gets
only the rest of the text, unless the step rejects prefills (`reject-prefill`:
a 400 about the final assistant message, as Mistral and others send). Faults
over a sequence of requests are scripts: `-r 503 -r ok --loop` flaps.

The fake itself is `chain429.testing.FakeProvider`: the same one the tests,
`chain429 demo` and the benchmark use.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from chain429.fakes.replies import (
    ERROR_PRESETS,
    ReceivedRequest,
    Reply,
    assistant_prefill,
    in_kind,
    preset_error,
    route_of,
    wants_stream,
)

__all__ = ["FakeScript", "ScriptError", "Step", "load_script", "parse_step"]

ReplySource = Reply | Callable[[ReceivedRequest], Reply]


class ScriptError(ValueError):
    """A step or script that cannot be played; the message says where and why."""


@dataclasses.dataclass(frozen=True)
class Step:
    """What one request gets (`times` requests in a row)."""

    status: int = 200
    drop: Literal["reset", "hang"] | None = None  # no answer at all (see Reply.drop)
    retry_after: str | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0  # seconds before the answer's headers
    first_token: float = 0.0  # streams: seconds between the headers and the first chunk
    chunk_delay: float = 0.0  # streams: seconds before each chunk
    cut_after: int | None = None  # close the connection after N chunks (a plain body: bytes)
    stall_after: int | None = None  # go silent after N chunks, connection open
    malformed_after: int | None = None  # streams: a junk event after N chunks (plain: junk body)
    done: bool = True  # streams: end with `data: [DONE]`
    error: str | None = None  # an error status's body: one of ERROR_PRESETS
    reject_prefill: bool = False  # a 200 that refuses a final assistant message (400)
    text: str | None = None  # the answer's text (a 200), word by word in a stream
    times: int = 1

    def reply_source(self, name: str) -> ReplySource:
        """The fake's answer for one request, chosen by whether it asks for a stream."""
        if self.drop == "reset":
            return Reply.reset(self.delay)
        if self.drop == "hang":
            return Reply.hang()
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["retry-after"] = self.retry_after
        if self.status != 200:
            if self.error is not None:
                error = preset_error(self.error, self.status)
            elif self.status == 429:
                error = Reply.rate_limited()
            else:
                error = Reply.error(self.status)
            return dataclasses.replace(
                error,
                headers={**error.headers, **headers},
                delay=self.delay,
                cut_after=self.cut_after,
                stall_after=self.stall_after,
            )
        text = self.text or f"Hello from {name}"
        whole = self._answer(text, headers, custom_text=self.text is not None)
        refusal = preset_error("prefill")

        def choose(request: ReceivedRequest) -> Reply:
            prefill = assistant_prefill(request.body)
            if prefill is None:
                return whole(request)
            if self.reject_prefill:
                return refusal
            if prefill and text.startswith(prefill):  # go on from where the prefill ends
                return self._answer(text[len(prefill) :], headers, custom_text=True)(request)
            return whole(request)

        return choose

    def _answer(
        self, text: str, headers: Mapping[str, str], *, custom_text: bool
    ) -> Callable[[ReceivedRequest], Reply]:
        body: bytes | dict[str, Any] | None = _completion(text) if custom_text else None
        if self.malformed_after is not None:
            body = b'{"id":"chatcmpl-fake-script","choices":[{"index":0,"message":{"rol'
        plain = Reply(
            headers=headers,
            body=body,
            delay=self.delay + self.first_token,
            cut_after=self.cut_after,
            stall_after=self.stall_after,
        )
        streams = [
            Reply.stream(
                text,
                headers=headers,
                delay=self.delay,
                first_chunk_delay=self.first_token,
                chunk_delay=self.chunk_delay,
                cut_after=self.cut_after,
                stall_after=self.stall_after,
                done=self.done,
                legacy=legacy,
            )
            for legacy in (False, True)  # chat, then a legacy completion's
        ]
        if self.malformed_after is not None:
            for i, stream in enumerate(streams):
                chunks = list(stream.chunks or ())
                chunks.insert(min(self.malformed_after, len(chunks)), b"data: {not json\n\n")
                streams[i] = dataclasses.replace(stream, chunks=chunks)
        chosen = in_kind(plain, *streams)
        if not custom_text or self.malformed_after is not None:
            return chosen
        # The custom text as the route answers it: a legacy completion's text; an
        # embedding has none (its vector is the fake's own).
        by_route = {
            "completions": dataclasses.replace(plain, body=_completion(text, legacy=True)),
            "embeddings": dataclasses.replace(plain, body=None),
        }

        def choose(request: ReceivedRequest) -> Reply:
            route = route_of(request.path)
            if route in by_route and not wants_stream(request.body):
                return by_route[route]
            return chosen(request)

        return choose

    def describe(self) -> str:
        shown = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("status", "drop", "headers") and getattr(self, f.name) != f.default
        }
        parts = [self.drop or ("ok" if self.status == 200 else str(self.status))]
        parts += [f"{_CLI_NAMES[k]}={_shown(v)}" for k, v in shown.items()]
        parts += [f"header={k}:{v}" for k, v in self.headers.items()]
        return ",".join(parts)


def _shown(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _completion(text: str, *, legacy: bool = False) -> dict[str, Any]:
    """A chat completion answering `text` (`legacy`: a legacy text completion)."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
    if legacy:
        choice["text"] = text
    else:
        choice["message"] = {"role": "assistant", "content": text}
    return {
        "id": f"{'cmpl' if legacy else 'chatcmpl'}-fake-script",
        "object": "text_completion" if legacy else "chat.completion",
        "created": 0,
        "model": None,  # the model the request asked for
        "choices": [choice],
    }


# Option names: on the command line, in YAML, and the field they set.
_FIELDS = {
    "retry-after": ("retryAfter", "retry_after"),
    "delay": ("delay", "delay"),
    "first-token": ("firstToken", "first_token"),
    "chunk-delay": ("chunkDelay", "chunk_delay"),
    "cut": ("cutAfter", "cut_after"),
    "stall": ("stallAfter", "stall_after"),
    "malformed": ("malformedAfter", "malformed_after"),
    "done": ("done", "done"),
    "error": ("error", "error"),
    "reject-prefill": ("rejectPrefill", "reject_prefill"),
    "text": ("text", "text"),
    "times": ("times", "times"),
}
_CLI_NAMES = {field: cli for cli, (_, field) in _FIELDS.items()}
_YAML_FIELDS = {yaml_name: field for yaml_name, field in _FIELDS.values()}
_KINDS: dict[str, type] = {
    "retry_after": str,
    "delay": float,
    "first_token": float,
    "chunk_delay": float,
    "cut_after": int,
    "stall_after": int,
    "malformed_after": int,
    "done": bool,
    "error": str,
    "reject_prefill": bool,
    "text": str,
    "times": int,
}


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _value(field: str, raw: Any, where: str) -> Any:
    kind = _KINDS[field]
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        word = str(raw).strip().lower()
        if word not in _TRUE + _FALSE:
            raise ScriptError(f"{where}: {_CLI_NAMES[field]} must be true or false")
        return word in _TRUE
    if field == "error":
        if raw not in ERROR_PRESETS:
            known = ", ".join(ERROR_PRESETS)
            raise ScriptError(f"{where}: error must be one of {known} (got {raw!r})")
        return raw
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ScriptError(f"{where}: {_CLI_NAMES[field]} must be a {kind.__name__}") from None
    if kind in (int, float) and value < 0:
        raise ScriptError(f"{where}: {_CLI_NAMES[field]} must not be negative")
    if field == "times" and value < 1:
        raise ScriptError(f"{where}: times must be at least 1")
    return value


_DROPS = ("reset", "hang")


def _head(raw: Any, where: str) -> dict[str, Any]:
    """A step's head: a status, `ok`, or a dropped connection (`reset`, `hang`)."""
    if raw in _DROPS:
        return {"drop": raw}
    return {"status": _status(raw, where)}


def _checked(values: dict[str, Any], headers: dict[str, str], where: str) -> Step:
    if values.get("error") is not None and values.get("status", 200) < 400:
        raise ScriptError(f"{where}: error= is the body of an error status: write 400,error=...")
    return Step(headers=headers, **values)


def _status(raw: Any, where: str) -> int:
    if raw == "ok":
        return 200
    try:
        status = int(raw)
    except (TypeError, ValueError):
        raise ScriptError(
            f"{where}: {raw!r} is not a status (a number, ok, reset or hang)"
        ) from None
    if not 100 <= status <= 599 or 100 <= status < 200:
        raise ScriptError(f"{where}: {status} is not a status a provider answers with")
    return status


def parse_step(spec: str) -> Step:
    """`429,retry-after=30` (see the module docstring) as a Step."""
    head, *options = [part.strip() for part in spec.split(",")]
    where = f"reply {spec!r}"
    values: dict[str, Any] = _head(head, where)
    headers: dict[str, str] = {}
    for option in options:
        key, sep, raw = option.partition("=")
        if key == "header":
            name, colon, value = raw.partition(":")
            if not colon or not name.strip():
                raise ScriptError(f"{where}: write header=NAME:VALUE")
            headers[name.strip()] = value.strip()
            continue
        if not sep or key not in _FIELDS:
            known = ", ".join([*_FIELDS, "header"])
            raise ScriptError(f"{where}: unknown option {key!r}; options: {known}")
        field = _FIELDS[key][1]
        values[field] = _value(field, raw, where)
    return _checked(values, headers, where)


def _yaml_step(item: Any, where: str) -> Step:
    if isinstance(item, str | int):
        return parse_step(str(item))
    if not isinstance(item, Mapping):
        raise ScriptError(f"{where}: a reply is a mapping (status, retryAfter, ...) or a string")
    values: dict[str, Any] = {}
    headers: dict[str, str] = {}
    for key, raw in item.items():
        if key == "status":
            values.update(_head(raw, where))
        elif key == "headers":
            if not isinstance(raw, Mapping):
                raise ScriptError(f"{where}: headers is a mapping of names to values")
            headers = {str(k): str(v) for k, v in raw.items()}
        elif key in _YAML_FIELDS:
            values[_YAML_FIELDS[key]] = _value(_YAML_FIELDS[key], raw, where)
        else:
            known = ", ".join(["status", "headers", *_YAML_FIELDS])
            raise ScriptError(f"{where}: unknown key {key!r}; keys: {known}")
    return _checked(values, headers, where)


@dataclasses.dataclass(frozen=True)
class FakeScript:
    steps: tuple[Step, ...] = ()
    loop: bool = False

    def reply_source(self, name: str) -> ReplySource:
        """One reply source playing the script, one step per chat request.

        Only one event loop ever calls it (the fake's), so the iterator needs no lock.
        """
        plain = Step().reply_source(name)
        if not self.steps:
            return plain
        expanded = [step.reply_source(name) for step in self.steps for _ in range(step.times)]
        order: Iterator[ReplySource] = (
            itertools.cycle(expanded)
            if self.loop
            else itertools.chain(expanded, itertools.repeat(plain))
        )

        def play(request: ReceivedRequest) -> Reply:
            source = next(order)
            return source if isinstance(source, Reply) else source(request)

        return play

    def describe(self) -> str:
        if not self.steps:
            return "every request answered (a stream when asked for one)"
        steps = " -> ".join(step.describe() for step in self.steps)
        return f"{steps}, {'then again' if self.loop else 'then ok'}"


def load_script(
    path: Path | None = None, replies: Sequence[str] = (), loop: bool | None = None
) -> FakeScript:
    """A script from a YAML file and/or `--reply` specs (the file's steps first)."""
    steps: list[Step] = []
    file_loop = False
    if path is not None:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ScriptError(f"{path}: cannot read: {exc}") from None
        except yaml.YAMLError as exc:
            raise ScriptError(f"{path}: invalid YAML: {exc}") from None
        if not isinstance(data, Mapping) or not isinstance(data.get("replies"), list):
            raise ScriptError(f"{path}: a script is a mapping with a `replies` list")
        unknown = set(data) - {"replies", "loop"}
        if unknown:
            raise ScriptError(f"{path}: unknown key {sorted(unknown)[0]!r}; keys: replies, loop")
        steps += [
            _yaml_step(item, f"{path}: replies[{i}]") for i, item in enumerate(data["replies"])
        ]
        file_loop = bool(data.get("loop", False))
    steps += [parse_step(spec) for spec in replies]
    return FakeScript(tuple(steps), file_loop if loop is None else loop)
