"""The outcome table: what each upstream answer does to the waterfall and the entry."""

from __future__ import annotations

import json

import httpx
import pytest

from chain429.routing.endpoints import Endpoint
from chain429.routing.outcome import (
    CooldownPolicy,
    Kind,
    Scope,
    classify,
    classify_stream_error,
)
from chain429.upstream.presets import PRESETS
from chain429.upstream.times import parse_duration, parse_reset, parse_retry_after

NOW = 1_800_000_000.0
POLICY = CooldownPolicy(default_s=60, payment_s=300, unhealthy_s=600)
DEEP = b'{"choices": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"  # < 64 KiB: dialects parse it
COMPLETION = json.dumps(
    {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {}}]}
).encode()


def run(status, headers=None, body=b"", error=None):
    return classify(status, httpx.Headers(headers or {}), body, error, now=NOW, policy=POLICY)


# (status, headers, body, error) -> (kind, falls through?, cooldown seconds or None, scope)
TABLE = [
    (200, {}, COMPLETION, None, Kind.SUCCESS, False, None, Scope.ENTRY),
    (429, {"retry-after": "30"}, b"", None, Kind.RATE_LIMITED, True, 30, Scope.ENTRY),
    (429, {"retry-after": "1.5"}, b"", None, Kind.RATE_LIMITED, True, 1.5, Scope.ENTRY),
    (429, {}, b"", None, Kind.RATE_LIMITED, True, 60, Scope.ENTRY),
    (402, {}, b"", None, Kind.QUOTA_EXHAUSTED, True, 300, Scope.PROVIDER),
    (401, {}, b"", None, Kind.UNHEALTHY, True, 600, Scope.PROVIDER),
    (403, {}, b"", None, Kind.UNHEALTHY, True, 600, Scope.PROVIDER),
    (404, {}, b"", None, Kind.UNHEALTHY, True, 600, Scope.ENTRY),
    (408, {}, b"", None, Kind.TRANSIENT, True, None, Scope.ENTRY),
    (409, {}, b"", None, Kind.TRANSIENT, True, None, Scope.ENTRY),
    (500, {}, b"", None, Kind.TRANSIENT, True, None, Scope.ENTRY),
    (502, {}, b"", None, Kind.TRANSIENT, True, None, Scope.ENTRY),
    (503, {"retry-after": "5"}, b"", None, Kind.TRANSIENT, True, None, Scope.ENTRY),
    (None, {}, b"", "connect_error", Kind.TRANSIENT, True, None, Scope.ENTRY),
    (None, {}, b"", "connection_reset", Kind.TRANSIENT, True, None, Scope.ENTRY),
    (None, {}, b"", "timeout", Kind.TRANSIENT, True, None, Scope.ENTRY),
    # Over maxUpstreamBodyBytes / maxSseEventBytes: the entry rests a minute.
    (None, {}, b"", "upstream_too_large", Kind.UNHEALTHY, True, 60, Scope.ENTRY),
    (200, {}, b"<html>gateway</html>", None, Kind.TRANSIENT, True, None, Scope.ENTRY),
    # Valid JSON nested deeper than Python's parser goes: junk, not a crash.
    (200, {}, DEEP, None, Kind.TRANSIENT, True, None, Scope.ENTRY),
    (429, {}, DEEP, None, Kind.RATE_LIMITED, True, 60, Scope.ENTRY),
    (
        200,
        {},
        b'{"error": {"message": "overloaded"}}',
        None,
        Kind.TRANSIENT,
        True,
        None,
        Scope.ENTRY,
    ),
    (413, {}, b"", None, Kind.TOO_LARGE, True, None, Scope.ENTRY),
    (
        400,
        {},
        b'{"error": {"code": "context_length_exceeded"}}',
        None,
        Kind.TOO_LARGE,
        True,
        None,
        Scope.ENTRY,
    ),
    (
        400,
        {},
        b'{"error": {"message": "bad temperature"}}',
        None,
        Kind.CLIENT_ERROR,
        False,
        None,
        Scope.ENTRY,
    ),
    (422, {}, b'{"detail": "bad"}', None, Kind.CLIENT_ERROR, False, None, Scope.ENTRY),
]


@pytest.mark.parametrize(
    ("status", "headers", "body", "error", "kind", "falls", "cooldown", "scope"), TABLE
)
def test_outcome_table(status, headers, body, error, kind, falls, cooldown, scope):
    outcome = run(status, headers, body, error)
    assert outcome.kind is kind
    assert outcome.falls_through is falls
    if cooldown is None:
        assert outcome.until is None
    else:
        assert outcome.until == pytest.approx(NOW + cooldown)
        assert outcome.scope is scope


def test_trace_tokens_name_status_or_transport_error():
    assert run(429).token == "429"
    assert run(None, error="timeout").token == "timeout"
    assert run(200, body=b"nope").token == "invalid_body"
    assert run(200, body=DEEP).token == "invalid_body"
    assert run(None, error="upstream_too_large").token == "upstream_too_large"


def test_an_oversized_answer_cools_down_for_the_policys_oversize_time():
    policy = CooldownPolicy(oversize_s=5)
    outcome = classify(None, {}, b"", "upstream_too_large", now=NOW, policy=policy)
    assert outcome.until == pytest.approx(NOW + 5)
    assert "maxUpstreamBodyBytes" in outcome.reason


def test_an_error_event_too_deep_to_encode_is_not_a_crash():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    outcome = classify_stream_error({"message": deep}, now=NOW, policy=POLICY)
    assert outcome.kind is Kind.TRANSIENT


def test_429_retry_after_http_date():
    outcome = run(429, {"retry-after": "Fri, 15 Jan 2027 08:00:30 GMT"})
    # 2027-01-15T08:00:30Z, capped to the max cooldown from NOW (2027-01-15T08:00:00Z).
    assert outcome.until == pytest.approx(NOW + 30)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        # OpenAI / Groq durations, the exhausted family wins.
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "2m59.56s",
                "x-ratelimit-remaining-tokens": "900",
                "x-ratelimit-reset-tokens": "6ms",
            },
            179.56,
        ),
        # A bare number in a duration header means seconds, not zero.
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "60"}, 60),
        # Cerebras: seconds as floats, with -day / -minute suffixes.
        (
            {"x-ratelimit-remaining-tokens-minute": "0", "x-ratelimit-reset-tokens-minute": "33.5"},
            33.5,
        ),
        # OpenRouter: epoch milliseconds.
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int((NOW + 42) * 1000))}, 42),
    ],
)
def test_429_cools_down_from_reset_headers(headers, seconds):
    assert run(429, headers).until == pytest.approx(NOW + seconds)


@pytest.mark.parametrize(
    ("body", "seconds"),
    [
        (b'{"error": {"message": "Please try again in 46.72s. Visit ..."}}', 46.72),
        (b'{"error": {"message": "Rate limit reached. Please try again in 7m12.3s."}}', 432.3),
        (b'{"error": {"details": [{"@type": "RetryInfo", "retryDelay": "52s"}]}}', 52),
        (b'{"error": {"message": "Please retry in 52.45s."}}', 52.45),
    ],
)
def test_429_cools_down_from_body_hints(body, seconds):
    assert run(429, {}, body).until == pytest.approx(NOW + seconds)


def test_retry_after_beats_reset_headers_and_body():
    outcome = run(
        429,
        {
            "retry-after": "7",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1h",
        },
        b"try again in 10m",
    )
    assert outcome.until == pytest.approx(NOW + 7)


def test_zero_hint_still_cools_down_a_little():
    assert run(429, {"retry-after": "0"}).until == pytest.approx(NOW + POLICY.min_s)


def test_parsers():
    assert parse_duration("1m30s") == 90
    assert parse_duration("120ms") == pytest.approx(0.12)
    assert parse_duration("2h30m0s") == 9000
    assert parse_duration("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT", now=0) == 1792567680.0
    assert parse_retry_after("garbage", now=0) is None
    assert parse_reset("1792567680", now=0) == 1792567680.0


def test_429_reads_headers_in_the_providers_dialect():
    # Mistral sends no reset header: its per-minute quota refills at the minute's end,
    # 45 s away here, where a dialect-blind reading would wait the 60 s default.
    headers = httpx.Headers(
        {"x-ratelimit-limit-req-minute": "60", "x-ratelimit-remaining-req-minute": "0"}
    )
    now = NOW + 15  # NOW is on a minute boundary
    mistral = classify(
        429, headers, b"", None, now=now, policy=POLICY, dialect=PRESETS["mistral"].dialect
    )
    assert mistral.until == pytest.approx(NOW + 60)
    assert mistral.source == "header"


# -- the same table, for the other endpoints (chain429.routing.endpoints) ------

EMBEDDINGS = json.dumps(
    {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}]}
).encode()
TEXT_COMPLETION = json.dumps(
    {"id": "x", "object": "text_completion", "choices": [{"index": 0, "text": "hi"}]}
).encode()

# (endpoint, status, body) -> (kind, falls through?, cooldown seconds or None)
ENDPOINT_TABLE = [
    (Endpoint.EMBEDDINGS, 200, EMBEDDINGS, Kind.SUCCESS, False, None),
    # A chat completion is no answer to an embeddings request, nor the reverse.
    (Endpoint.EMBEDDINGS, 200, COMPLETION, Kind.TRANSIENT, True, None),
    (Endpoint.CHAT, 200, EMBEDDINGS, Kind.TRANSIENT, True, None),
    (Endpoint.EMBEDDINGS, 200, b'{"data": [], "error": {}}', Kind.TRANSIENT, True, None),
    # An embeddings chain's entry that 404s is an unknown model: it rests, as in chat.
    (Endpoint.EMBEDDINGS, 404, b"", Kind.UNHEALTHY, True, 600),
    (Endpoint.EMBEDDINGS, 429, b"", Kind.RATE_LIMITED, True, 60),
    (Endpoint.COMPLETIONS, 200, TEXT_COMPLETION, Kind.SUCCESS, False, None),
    # No legacy route on this provider (or not for this chat model): the next entry
    # may have one, and the entry stays available to its chat chain.
    (Endpoint.COMPLETIONS, 404, b"", Kind.UNSUPPORTED, True, None),
    (Endpoint.COMPLETIONS, 405, b"", Kind.UNSUPPORTED, True, None),
    (Endpoint.COMPLETIONS, 429, b"", Kind.RATE_LIMITED, True, 60),
    (Endpoint.COMPLETIONS, 400, b'{"error": {}}', Kind.CLIENT_ERROR, False, None),
    (Endpoint.CHAT, 405, b"", Kind.TRANSIENT, True, None),
]


@pytest.mark.parametrize(
    ("endpoint", "status", "body", "kind", "falls", "cooldown"), ENDPOINT_TABLE
)
def test_outcome_table_per_endpoint(endpoint, status, body, kind, falls, cooldown):
    outcome = classify(
        status, httpx.Headers(), body, None, now=NOW, policy=POLICY, endpoint=endpoint
    )
    assert (outcome.kind, outcome.falls_through) == (kind, falls)
    assert outcome.until == (None if cooldown is None else pytest.approx(NOW + cooldown))
    assert not outcome.retryable or kind is Kind.TRANSIENT
