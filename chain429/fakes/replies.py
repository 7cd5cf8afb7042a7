"""What a scripted answer of the fake provider is, and how it is framed on the wire.

``Reply`` (with its ``rate_limited``/``error``/``stream`` constructors) pre-encodes
its status line, headers and static body at construction; ``ReceivedRequest`` is
what the fake recorded of a request. The helpers here (``dumps``,
``fill_model``, ``request_model``, ``static``, ``head``, ``COMPLETION``,
``TEXT_COMPLETION``, ``embeddings_body``) are the framing API that the server in
``chain429.fakes.provider`` builds its bytes with.

The fake answers the three routes chain429 proxies: chat completions, legacy
completions (``text_completion``; ``Reply.stream(legacy=True)`` streams them)
and embeddings (deterministic vectors: the same text always gets the same
unit vector, `encoding_format: base64` and `dimensions` honoured).
Hostile answers for the size limits: ``Reply.sized`` (a valid completion of an
exact size), ``Reply.bomb`` and ``compressed_zeros`` (a gzip/deflate bomb built
in milliseconds), ``deep_json`` (nesting that breaks a JSON parser), and
``Reply(forever=...)`` (a stream that never ends: keep-alives, or tokens).
Stdlib only.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import math
import random
import re
import struct
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from http.client import responses
from typing import Any, Literal

Chunk = bytes | str | dict[str, Any]

_SERVER = b"server: chain429-fake\r\n"
_JSON = b"content-type: application/json\r\n"
FALLBACK_MODEL = "fake-model"
_stream_ids = itertools.count(1)


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {responses.get(status, 'Unknown')}\r\n".encode("latin-1")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def fill_model(obj: dict[str, Any], model: str) -> dict[str, Any]:
    # A top-level "model": None means "the model the client asked for", so one
    # scripted Reply works whatever model a chain entry sends.
    return {**obj, "model": model} if obj.get("model", "") is None else obj


def request_model(body: bytes) -> str:
    try:
        model = json.loads(body).get("model")
    except (ValueError, AttributeError):
        return FALLBACK_MODEL
    return model if isinstance(model, str) else FALLBACK_MODEL


def _error_body(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "requests"}


@dataclasses.dataclass(frozen=True)
class Reply:
    """One scripted answer. Framing is pre-encoded at construction (why it is frozen)."""

    status: int = 200
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # None -> the answer the route gives, built for the request (a chat.completion, a
    # text_completion, an embedding list); dict -> JSON; str/bytes sent as is.
    # A dict (or dict chunk) with a top-level "model": None gets the request's model.
    body: bytes | str | dict[str, Any] | None = None
    delay: float = 0.0  # before the status line
    # Streaming: SSE in chunked transfer-encoding, so a cut is detectable by the client
    # (a close-delimited body would make an abrupt close look like a clean end).
    chunks: Sequence[Chunk] | None = None
    chunk_delay: float = 0.0  # before each chunk (so also between the headers and the first)
    # Streaming: before the first chunk only, headers already sent (a slow first token).
    first_chunk_delay: float = 0.0
    # Close abruptly / go silent after this many chunks (for a plain body: bytes of body).
    cut_after: int | None = None
    stall_after: int | None = None
    # Streaming: once `chunks` are out, send this every `chunk_delay` seconds (at
    # least every 10 ms) until the client leaves. Implies a stream (chunks=()).
    forever: Chunk | None = None
    # No answer at all, after `delay`: "reset" closes the connection with a TCP
    # reset before any byte (a crashed or overloaded server); "hang" keeps it
    # open and silent until the client gives up (a dead backend behind a proxy).
    drop: Literal["reset", "hang"] | None = None

    _prefix: bytes = dataclasses.field(init=False, repr=False, compare=False, default=b"")
    _extra: bytes = dataclasses.field(init=False, repr=False, compare=False, default=b"")
    _static: bytes | None = dataclasses.field(init=False, repr=False, compare=False, default=None)
    _parts: tuple[bytes | dict[str, Any], ...] = dataclasses.field(
        init=False, repr=False, compare=False, default=()
    )
    _forever: bytes | dict[str, Any] | None = dataclasses.field(
        init=False, repr=False, compare=False, default=None
    )
    _immediate: bool = dataclasses.field(init=False, repr=False, compare=False, default=True)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.forever is not None and self.chunks is None:
            set_(self, "chunks", ())
        own_type, extra = True, []
        for name, value in self.headers.items():
            low = name.lower()
            if low in ("content-length", "transfer-encoding"):
                continue  # framing is ours; a wrong length would hang the client
            own_type = own_type and low != "content-type"
            extra.append(f"{name}: {value}\r\n")
        set_(self, "_extra", "".join(extra).encode("latin-1"))
        ctype = b""
        if own_type:
            ctype = b"content-type: text/event-stream\r\n" if self.chunks is not None else _JSON
        set_(self, "_prefix", _status_line(self.status) + _SERVER + ctype)
        body = self.body
        if isinstance(body, str | bytes):
            set_(self, "_static", body.encode() if isinstance(body, str) else body)
        elif isinstance(body, dict) and body.get("model", "") is not None:
            set_(self, "_static", dumps(body))
        if self.chunks is not None:
            set_(self, "_parts", tuple(_part(c) for c in self.chunks))
        if self.forever is not None:
            set_(self, "_forever", _part(self.forever))
        set_(
            self,
            "_immediate",
            self.delay <= 0
            and self.drop is None
            and self.chunks is None
            and self.cut_after is None
            and self.stall_after is None,
        )

    @classmethod
    def sized(cls, size: int, *, model: str = FALLBACK_MODEL) -> Reply:
        """A valid chat completion whose body is exactly `size` bytes (its content pads it)."""
        bare = _sized_completion("", model)
        pad = size - len(dumps(bare))
        if pad < 0:
            raise ValueError(f"a chat completion takes at least {size - pad} bytes")
        return cls(body=_sized_completion("x" * pad, model))

    @classmethod
    def bomb(cls, inflated_mib: int, encoding: str = "gzip", *, stream: bool = False) -> Reply:
        """A `Content-Encoding: gzip` (or deflate) body of zeros that inflates to
        `inflated_mib` MiB, about 1 KB per MiB. `stream=True` sends it as a
        text/event-stream in 64 KiB chunks."""
        body = compressed_zeros(inflated_mib, encoding)
        headers = {"content-encoding": encoding}
        if not stream:
            return cls(headers=headers, body=body)
        pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
        return cls(headers=headers, chunks=pieces)

    @classmethod
    def reset(cls, delay: float = 0.0) -> Reply:
        """No answer: the connection is reset before the status line."""
        return cls(drop="reset", delay=delay)

    @classmethod
    def hang(cls) -> Reply:
        """No answer: the connection stays open and silent until the client leaves."""
        return cls(drop="hang")

    @classmethod
    def rate_limited(
        cls,
        retry_after: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | dict[str, Any] | None = None,
    ) -> Reply:
        """429 shaped like OpenAI's. The message carries no retry hint on purpose, so
        a test of header parsing is not rescued by body parsing."""
        merged = {"retry-after": retry_after} if retry_after is not None else {}
        merged.update(headers or {})
        if body is None:
            body = _error_body(
                "Rate limit reached (fake provider)", "requests", "rate_limit_exceeded"
            )
        return cls(status=429, headers=merged, body=body)

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "Fake provider error",
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        type_ = (
            "server_error" if status >= 500 else _ERROR_TYPES.get(status, "invalid_request_error")
        )
        return cls(
            status=status, headers=dict(headers or {}), body=_error_body(message, type_, code)
        )

    @classmethod
    def stream(
        cls,
        text: str = "Hello from fake",
        model: str | None = None,
        *,
        pieces: Sequence[str] | None = None,
        finish_reason: str = "stop",
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        first_chunk_delay: float = 0.0,
        cut_after: int | None = None,
        stall_after: int | None = None,
        usage: Mapping[str, int] | None = None,
        done: bool = True,
        legacy: bool = False,
    ) -> Reply:
        """A well-formed OpenAI SSE stream: role chunk, one chunk per word (or per
        ``pieces``), finish chunk, a usage chunk (``choices: []``) when ``usage`` is
        given, ``data: [DONE]`` unless ``done=False``. model=None -> the request's.
        ``legacy=True``: a legacy completion's stream (``text_completion`` chunks,
        each choice's ``text``, no role chunk)."""
        prefix = "cmpl" if legacy else "chatcmpl"
        cid, created = f"{prefix}-fake-s{next(_stream_ids)}", int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            if legacy:
                choice = {
                    "index": 0,
                    "text": delta.get("content", ""),
                    "logprobs": None,
                    "finish_reason": finish,
                }
            return {
                "id": cid,
                "object": "text_completion" if legacy else "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [choice],
            }

        words = list(pieces) if pieces is not None else re.findall(r"\s*\S+", text)
        chunks: list[Chunk] = [] if legacy else [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": w}) for w in words]
        chunks.append(chunk({}, finish_reason))
        if usage is not None:
            chunks.append({**chunk({}), "choices": [], "usage": dict(usage)})
        if done:
            chunks.append(b"data: [DONE]\n\n")
        return cls(
            headers=dict(headers or {}),
            delay=delay,
            chunks=chunks,
            chunk_delay=chunk_delay,
            first_chunk_delay=first_chunk_delay,
            cut_after=cut_after,
            stall_after=stall_after,
        )


# 400s that real providers send, by what they are about: a router must tell them
# apart by their body (a context-length error may fit another model; a content
# filter will not pass anywhere; a refused prefill wants a fresh request).
# Messages as OpenAI, Azure OpenAI and Mistral word them.
ERROR_PRESETS: dict[str, tuple[str, str]] = {
    "context-length": (
        "This model's maximum context length is 8192 tokens. However, your messages "
        "resulted in 9021 tokens. Please reduce the length of the messages.",
        "context_length_exceeded",
    ),
    "content-filter": (
        "The response was filtered due to the prompt triggering Azure OpenAI's content "
        "management policy. Please modify your prompt and retry.",
        "content_filter",
    ),
    "prefill": (
        "Expected last role User or Tool (or Assistant with prefix True) for serving but "
        "got assistant",
        "invalid_request_message_order",
    ),
}


def preset_error(name: str, status: int = 400) -> Reply:
    """One of ERROR_PRESETS as an answer (a KeyError names an unknown one)."""
    message, code = ERROR_PRESETS[name]
    return Reply.error(status, message, code)


def assistant_prefill(body: bytes) -> str | None:
    """The text of a final assistant message (a prefill to continue), if the request ends so."""
    if body.find(b'"assistant"') < 0:  # the usual case, without parsing anything
        return None
    try:
        messages = json.loads(body).get("messages")
    except (ValueError, AttributeError, RecursionError):
        return None
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    content = last.get("content")
    return content if last.get("role") == "assistant" and isinstance(content, str) else None


def in_kind(
    plain: Reply, stream: Reply, legacy_stream: Reply | None = None
) -> Callable[[ReceivedRequest], Reply]:
    """A reply source answering a streaming request with `stream` (a streaming legacy
    completion with `legacy_stream`, when given), any other with `plain`. Embeddings do
    not stream: a `stream` there gets the embedding list."""

    def choose(request: ReceivedRequest) -> Reply:
        route = route_of(request.path)
        if not wants_stream(request.body) or route == "embeddings":
            return plain
        legacy = legacy_stream is not None and route == "completions"
        return legacy_stream if legacy and legacy_stream is not None else stream

    return choose


Route = Literal["chat", "completions", "embeddings"]


def route_of(path: str | bytes) -> Route | None:
    """Which route a request path is (`.../chat/completions`, `.../completions`,
    `.../embeddings`), whatever prefix the base URL has; None for any other."""
    text = path.decode("latin-1") if isinstance(path, bytes) else path
    if text.endswith("/chat/completions"):
        return "chat"
    if text.endswith("/completions"):
        return "completions"
    if text.endswith("/embeddings"):
        return "embeddings"
    return None


def wants_stream(body: bytes) -> bool:
    """Whether a chat request asks for a stream (`"stream": true`)."""
    if body.find(b'"stream"') < 0:  # the usual case, without parsing anything
        return False
    try:
        return json.loads(body).get("stream") is True
    except (ValueError, AttributeError, RecursionError):
        return False


def _part(chunk: Chunk) -> bytes | dict[str, Any]:
    """One stream chunk, framed now unless it needs the request's model."""
    if isinstance(chunk, dict):  # a "model": None chunk is encoded per request
        return chunk if chunk.get("model", "") is None else b"data: " + dumps(chunk) + b"\n\n"
    return chunk.encode() if isinstance(chunk, str) else bytes(chunk)


def _sized_completion(content: str, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake-sized",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
    }


def deep_json(levels: int) -> str:
    """A chat chunk whose delta nests `levels` lists deep: valid JSON that Python's
    parser refuses (RecursionError) beyond about 1,000 levels."""
    return '{"choices":[{"index":0,"delta":' + "[" * levels + "]" * levels + "}]}"


_MIB = 1 << 20
_CRC_POLY = 0xEDB88320  # CRC-32 (gzip), reflected


def _gf2_times(matrix: list[int], vector: int) -> int:
    out, i = 0, 0
    while vector:
        if vector & 1:
            out ^= matrix[i]
        vector >>= 1
        i += 1
    return out


def _crc32_of_zeros(n: int) -> int:
    """zlib.crc32(bytes(n)) in O(log n): the CRC register's step over a zero bit
    is linear over GF(2), so n bytes are its 8n-th power (zlib's crc32_combine)."""
    step = [_CRC_POLY] + [1 << (i - 1) for i in range(1, 32)]  # column i: image of bit i
    register, bits = 0xFFFFFFFF, 8 * n
    while bits:
        if bits & 1:
            register = _gf2_times(step, register)
        bits >>= 1
        if bits:
            step = [_gf2_times(step, column) for column in step]
    return register ^ 0xFFFFFFFF


def compressed_zeros(mib: int, encoding: str = "gzip") -> bytes:
    """A valid gzip (or zlib-wrapped deflate) stream of `mib` MiB of zeros, built
    without compressing them: one MiB is deflated once, ending on a full flush
    (byte-aligned, no back-references), and that block is repeated."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = compressor.compress(bytes(_MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    deflated = block * mib + b"\x03\x00"  # then a final, empty block
    size = mib * _MIB
    if encoding == "gzip":
        header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        return header + deflated + struct.pack("<II", _crc32_of_zeros(size), size & 0xFFFFFFFF)
    if encoding == "deflate":
        adler = ((size % 65521) << 16) | 1  # Adler-32 of zeros: a stays 1, b counts them
        return b"\x78\xda" + deflated + struct.pack(">I", adler)
    raise ValueError(f"unknown encoding {encoding!r}: gzip or deflate")


@dataclasses.dataclass
class ReceivedRequest:
    method: str
    path: str  # without the query string
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float = dataclasses.field(default_factory=time.monotonic)  # when it came in

    def json(self) -> Any:
        return json.loads(self.body)


COMPLETION = (
    b'{"id":"chatcmpl-fake-%d","object":"chat.completion","created":%d,"model":%s,'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":%s},'
    b'"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}'
)


TEXT_COMPLETION = (
    b'{"id":"cmpl-fake-%d","object":"text_completion","created":%d,"model":%s,'
    b'"choices":[{"text":%s,"index":0,"logprobs":null,"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}'
)
EMBEDDING_DIMENSIONS = 16  # without `dimensions` in the request: small, and enough to compare


def embedding(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """The fake's vector for `text`: a unit vector that depends on the text alone."""
    rng = random.Random(f"chain429-fake:{text}")  # str seeds hash with SHA-512: stable
    values = [rng.uniform(-1.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def embeddings_body(req_body: bytes, model: str) -> bytes:
    """An embedding list for the request: one vector per input (a string, a list of
    strings, token ids or lists of them), float or base64 (little-endian float32)."""
    try:
        request = json.loads(req_body)
    except (ValueError, RecursionError):
        request = {}
    request = request if isinstance(request, dict) else {}
    given = request.get("input", "")
    if isinstance(given, str) or (isinstance(given, list) and given and isinstance(given[0], int)):
        given = [given]
    inputs = given if isinstance(given, list) else [given]
    dimensions = request.get("dimensions")
    size = dimensions if isinstance(dimensions, int) and 0 < dimensions <= 8192 else None
    as_base64 = request.get("encoding_format") == "base64"
    data, tokens = [], 0
    for index, item in enumerate(inputs):
        text = item if isinstance(item, str) else json.dumps(item)
        tokens += len(item) if isinstance(item, list) else max(1, len(text) // 4)
        vector: list[float] | str = embedding(text, size or EMBEDDING_DIMENSIONS)
        if as_base64:
            packed = struct.pack(f"<{len(vector)}f", *vector)
            vector = base64.b64encode(packed).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return dumps({"object": "list", "data": data, "model": model, "usage": usage})


def static(reply: Reply) -> bytes:
    """The complete response (head and body) of a reply whose body is fixed."""
    assert reply._static is not None
    return head(reply, len(reply._static)) + reply._static


def head(reply: Reply, length: int) -> bytes:
    """Status line and headers of a Content-Length reply, up to the blank line."""
    return b"".join((reply._prefix, b"content-length: %d\r\n" % length, reply._extra, b"\r\n"))
