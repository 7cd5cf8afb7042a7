"""Rate-limit dialects: real-shaped headers and 429 bodies per provider, and day boundaries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from chain429.upstream.dialects import (
    Dialect,
    Reading,
    _zone,
    daily_exhausted,
    next_day_boundary,
    read_body,
    read_headers,
    window_end,
)
from chain429.upstream.presets import PRESETS, PROVIDER_TYPES, dialect_named

PDT = timezone(timedelta(hours=-7))  # written out, so the tests do not trust zoneinfo
PST = timezone(timedelta(hours=-8))


def at(*args: int, tz: timezone = UTC) -> float:
    return datetime(*args, tzinfo=tz).timestamp()


# Each preset's dialect, by the preset type the tables name.
D = {name: preset.dialect for name, preset in PRESETS.items()}
NOW = at(2027, 1, 15, 8, 0, 30)  # mid-minute, mid-day UTC
MINUTE_END = at(2027, 1, 15, 8, 1)
UTC_MIDNIGHT = at(2027, 1, 16)
PACIFIC_MIDNIGHT = at(2027, 1, 16, tz=PST)  # 00:30 PST now, so the same date's end
ALL = sorted(PRESETS)


def headers(raw: dict[str, str]) -> httpx.Headers:
    return httpx.Headers(raw)


def R(kind, window, limit, remaining, reset_at, source="header"):
    return Reading(kind, window, limit, remaining, reset_at, source)


def test_every_preset_owns_a_dialect_and_persisted_names_find_it():
    assert all(isinstance(PRESETS[name].dialect, Dialect) for name in PROVIDER_TYPES)
    assert {PRESETS[name].dialect.name for name in PROVIDER_TYPES} <= set(PROVIDER_TYPES)
    for name in PROVIDER_TYPES:
        assert dialect_named(PRESETS[name].dialect.name) is PRESETS[name].dialect or (
            PRESETS[name].dialect.name != name
        )
    assert dialect_named("a-type-removed-since") is D["generic-openai"]


# -- read_headers --------------------------------------------------------------

OPENAI_OK = {
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-reset-requests": "6ms",
    "x-ratelimit-limit-tokens": "200000",
    "x-ratelimit-remaining-tokens": "199000",
    "x-ratelimit-reset-tokens": "6m0s",
}
GROQ_OK = {
    "x-ratelimit-limit-requests": "14400",
    "x-ratelimit-remaining-requests": "14399.0",
    "x-ratelimit-reset-requests": "2m59.56s",
    "x-ratelimit-limit-tokens": "6000",
    "x-ratelimit-remaining-tokens": "5997",
    "x-ratelimit-reset-tokens": "7.66s",
}
CEREBRAS_OK = {
    "x-ratelimit-limit-requests-day": "14400",
    "x-ratelimit-remaining-requests-day": "14399",
    "x-ratelimit-reset-requests-day": "33011.382867",
    "x-ratelimit-limit-tokens-minute": "60000",
    "x-ratelimit-remaining-tokens-minute": "59000",
    "x-ratelimit-reset-tokens-minute": "11.382867",
}
OPENROUTER_OK = {
    "X-RateLimit-Limit": "20",
    "X-RateLimit-Remaining": "19",
    "X-RateLimit-Reset": str(int((NOW + 30) * 1000)),
}
MISTRAL_OK = {
    "x-ratelimit-limit-req-minute": "60",
    "x-ratelimit-remaining-req-minute": "0",
    "x-ratelimit-limit-tokens-minute": "500000",
    "x-ratelimit-remaining-tokens-minute": "499000",
    "x-ratelimit-tokens-query-cost": "1000",
}

READ_CASES = [
    # openai: both families per minute, resets are Go durations
    (
        "openai",
        OPENAI_OK,
        [
            R("requests", "minute", 10000, 9999, NOW + 0.006),
            R("tokens", "minute", 200000, 199000, NOW + 360),
        ],
    ),
    # groq: same names, but -requests is the DAILY request quota
    (
        "groq",
        GROQ_OK,
        [
            R("requests", "day", 14400, 14399, NOW + 179.56),
            R("tokens", "minute", 6000, 5997, NOW + 7.66),
        ],
    ),
    (
        "groq",
        {"x-ratelimit-limit-requests": "1000", "x-ratelimit-remaining-requests": "0"},
        [R("requests", "day", 1000, 0, UTC_MIDNIGHT)],
    ),
    # cerebras: suffixed names, resets in float seconds
    (
        "cerebras",
        CEREBRAS_OK,
        [
            R("requests", "day", 14400, 14399, NOW + 33011.382867),
            R("tokens", "minute", 60000, 59000, NOW + 11.382867),
        ],
    ),
    (
        "cerebras",
        {
            "x-ratelimit-limit-requests-minute": "30",
            "x-ratelimit-remaining-requests-hour": "0",
            "x-ratelimit-limit-tokens-day": "1000000",
            "x-ratelimit-remaining-tokens-day": "0",
        },
        [
            R("requests", "minute", 30, None, None),
            R("requests", "hour", None, 0, at(2027, 1, 15, 9)),
            R("tokens", "day", 1000000, 0, UTC_MIDNIGHT),
        ],
    ),
    # openrouter: bare names, reset in epoch milliseconds
    ("openrouter", OPENROUTER_OK, [R("requests", "minute", 20, 19, NOW + 30)]),
    # ... and a reset hours away can only be the daily quota's
    (
        "openrouter",
        {
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(UTC_MIDNIGHT * 1000)),
        },
        [R("requests", "day", 50, 0, UTC_MIDNIGHT)],
    ),
    # mistral: no reset header; an empty minute ends with the minute
    (
        "mistral",
        MISTRAL_OK,
        [
            R("requests", "minute", 60, 0, MINUTE_END),
            R("tokens", "minute", 500000, 499000, None),
        ],
    ),
    # google-ai sends nothing on success
    ("google-ai", {"content-type": "application/json"}, []),
    # generic-openai reads whichever family appears ...
    ("generic-openai", OPENAI_OK, read_headers(D["openai"], headers(OPENAI_OK), now=NOW)),
    ("generic-openai", CEREBRAS_OK, read_headers(D["cerebras"], headers(CEREBRAS_OK), now=NOW)),
    ("generic-openai", OPENROUTER_OK, [R("requests", "minute", 20, 19, NOW + 30)]),
    ("generic-openai", MISTRAL_OK, read_headers(D["mistral"], headers(MISTRAL_OK), now=NOW)),
    # ... and one quota spelled two or three ways is one reading, the most explicit
    (
        "generic-openai",
        {
            "x-ratelimit-remaining-requests-minute": "7",
            "x-ratelimit-remaining-requests": "8",
            "x-ratelimit-remaining": "9",
        },
        [R("requests", "minute", None, 7, None)],
    ),
    # a dialect ignores families it does not speak
    ("openai", OPENROUTER_OK, []),
    ("openrouter", OPENAI_OK, []),
    # resets: a bare "60" is 60 seconds; epochs are absolute, in s or ms
    (
        "openai",
        {"x-ratelimit-reset-requests": "60"},
        [R("requests", "minute", None, None, NOW + 60)],
    ),
    (
        "openai",
        {"x-ratelimit-reset-tokens": "1800000100"},
        [R("tokens", "minute", None, None, 1800000100.0)],
    ),
    (
        "cerebras",
        {"x-ratelimit-reset-tokens-minute": "1800000100000"},
        [R("tokens", "minute", None, None, 1800000100.0)],
    ),
]


@pytest.mark.parametrize(("dialect", "raw", "expected"), READ_CASES)
def test_read_headers(dialect, raw, expected):
    got = read_headers(D[dialect], headers(raw), now=NOW)
    assert _close(got, expected)


def _close(got: list[Reading], expected: list[Reading]) -> bool:
    assert len(got) == len(expected), got
    for g, e in zip(got, expected, strict=True):
        assert (g.kind, g.window, g.limit, g.remaining, g.source) == (
            e.kind,
            e.window,
            e.limit,
            e.remaining,
            e.source,
        )
        assert (g.reset_at is None) == (e.reset_at is None), (g, e)
        if e.reset_at is not None:
            assert g.reset_at == pytest.approx(e.reset_at, abs=1e-3)
    return True


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1s", 1),
        ("6m0s", 360),
        ("59.56s", 59.56),
        ("2m59.56s", 179.56),
        ("120ms", 0.12),
        ("2h30m0s", 9000),
        ("60", 60),
        ("1.5", 1.5),
    ],
)
def test_openai_reset_durations(value, seconds):
    (reading,) = read_headers(D["openai"], headers({"x-ratelimit-reset-requests": value}), now=NOW)
    assert reading.reset_at == pytest.approx(NOW + seconds)


def test_header_names_are_case_insensitive():
    shouty = {k.upper(): v for k, v in CEREBRAS_OK.items()}
    assert read_headers(D["cerebras"], headers(shouty), now=NOW) == read_headers(
        D["cerebras"], headers(CEREBRAS_OK), now=NOW
    )
    lower = {k.lower(): v for k, v in OPENROUTER_OK.items()}
    assert read_headers(D["openrouter"], headers(lower), now=NOW) == read_headers(
        D["openrouter"], headers(OPENROUTER_OK), now=NOW
    )
    # httpx.Headers looks names up case-insensitively; a plain dict works too.
    assert read_headers(D["openrouter"], OPENROUTER_OK, now=NOW)[0].limit == 20


JUNK = ["", " ", "lots", "NaN", "inf", "-inf", "-5", "1e400", "0x10", "5 5", "None", "1s2", "ms"]


@pytest.mark.parametrize("dialect", ALL)
@pytest.mark.parametrize("value", JUNK)
def test_junk_values_are_ignored(dialect, value):
    raw = {
        f"x-ratelimit-{field}{suffix}": value
        for field in ("limit", "remaining", "reset")
        for suffix in ("", "-requests", "-tokens", "-requests-day", "-req-minute")
    }
    assert read_headers(D[dialect], headers(raw), now=NOW) == []
    assert daily_exhausted(D[dialect], 429, headers(raw), value.encode(), now=NOW) is None


def test_junk_beside_good_values_keeps_the_good_ones():
    raw = {
        "x-ratelimit-limit-requests": "lots",
        "x-ratelimit-remaining-requests": "99",
        "x-ratelimit-reset-requests": "soon",
    }
    assert read_headers(D["openai"], headers(raw), now=NOW) == [
        R("requests", "minute", None, 99, None)
    ]


# -- daily_exhausted -------------------------------------------------------------


def body(message: str, **extra) -> bytes:
    return json.dumps({"error": {"message": message, **extra}}).encode()


GROQ_RPD = body(
    "Rate limit reached for model `llama-3.3-70b-versatile` in organization `org_01` service "
    "tier `on_demand` on requests per day (RPD): Limit 1000, Used 1000, Requested 1. "
    "Please try again in 1m26.4s.",
    type="requests",
    code="rate_limit_exceeded",
)
GROQ_TPD = body(
    "Rate limit reached for model `llama-3.1-8b-instant` in organization `org_01` on tokens per "
    "day (TPD): Limit 500000, Used 499000, Requested 1500. Please try again in 4m19.2s.",
    type="tokens",
)
GROQ_TPM = body(
    "Rate limit reached for model `llama-3.1-8b-instant` in organization `org_01` on tokens per "
    "minute (TPM): Limit 6000, Used 5000, Requested 1500. Please try again in 5s.",
    type="tokens",
)
OPENAI_RPD = body(
    "Rate limit reached for gpt-4o-mini in organization org-abc on requests per day (RPD): "
    "Limit 200, Used 200, Requested 1. Please try again in 7m12s.",
    type="requests",
)
OPENAI_RPM = body(
    "Rate limit reached for gpt-4o-mini in organization org-abc on requests per min (RPM): "
    "Limit 3, Used 3, Requested 1. Please try again in 20s.",
    type="requests",
)


def cerebras_body(message: str) -> bytes:
    return json.dumps(
        {
            "message": message,
            "type": "too_many_requests_error",
            "param": "quota",
            "code": "request_quota_exceeded",
        }
    ).encode()


def openrouter_body(message: str, reset_ms: float | None, remaining: str = "0") -> bytes:
    metadata = {}
    if reset_ms is not None:
        metadata["headers"] = {
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": remaining,
            "X-RateLimit-Reset": str(int(reset_ms)),
        }
    return body(message, code=429, metadata=metadata)


def gemini_body(*quota_ids: str, retry: str = "52.45s", wrap: bool = False) -> bytes:
    error = {
        "code": 429,
        "message": "You exceeded your current quota. Please retry in 52.45s.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/"
                        "generate_content_free_tier_requests",
                        "quotaId": quota_id,
                        "quotaDimensions": {"location": "global", "model": "gemini-2.5-pro"},
                        "quotaValue": "50",
                    }
                    for quota_id in quota_ids
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry},
        ],
    }
    data = [{"error": error}] if wrap else {"error": error}
    return json.dumps(data).encode()


RPD = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
RPM = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
TPM = "GenerateContentInputTokensPerModelPerMinute-FreeTier"
GROQ_RPD_GONE = {
    "x-ratelimit-limit-requests": "1000",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "1m26.4s",
    "retry-after": "87",
}

# (dialect, status, headers, body) -> epoch seconds or None
DAILY_CASES = [
    # groq: the daily request bucket refills continuously; its own reset wins
    ("groq", 429, GROQ_RPD_GONE, GROQ_RPD, NOW + 86.4),
    ("groq", 429, GROQ_RPD_GONE, b"", NOW + 86.4),
    ("groq", 429, {}, GROQ_RPD, UTC_MIDNIGHT),
    # tokens per day: the headers carry no tokens-day reading, so the day boundary
    ("groq", 429, {**GROQ_OK, "retry-after": "260"}, GROQ_TPD, UTC_MIDNIGHT),
    ("groq", 429, {**GROQ_OK, "retry-after": "5"}, GROQ_TPM, None),
    ("groq", 200, GROQ_RPD_GONE, b"", None),
    # openai: -requests is per minute, so remaining 0 there is not the day
    ("openai", 429, {"x-ratelimit-remaining-requests": "0"}, OPENAI_RPM, None),
    ("openai", 429, {"x-ratelimit-remaining-requests": "0"}, OPENAI_RPD, UTC_MIDNIGHT),
    # cerebras
    (
        "cerebras",
        429,
        {"x-ratelimit-remaining-requests-day": "0", "x-ratelimit-reset-requests-day": "3600.5"},
        cerebras_body("Requests per day limit exceeded - too many requests sent."),
        NOW + 3600.5,
    ),
    (
        "cerebras",
        429,
        {},
        cerebras_body("Tokens per day limit exceeded - too many tokens processed."),
        UTC_MIDNIGHT,
    ),
    (
        "cerebras",
        429,
        CEREBRAS_OK,
        cerebras_body("Tokens per minute limit exceeded - too many tokens processed."),
        None,
    ),
    # openrouter: the day's reset comes in the body's metadata.headers too
    (
        "openrouter",
        429,
        {},
        openrouter_body(
            "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free "
            "model requests per day",
            UTC_MIDNIGHT * 1000,
        ),
        UTC_MIDNIGHT,
    ),
    (
        "openrouter",
        429,
        {},
        body("Rate limit exceeded: free-models-per-day-high-balance. ", code="429"),
        UTC_MIDNIGHT,
    ),
    (
        "openrouter",
        429,
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int((NOW + 5 * 3600) * 1000))},
        b"",
        NOW + 5 * 3600,
    ),
    (
        "openrouter",
        429,
        {},
        openrouter_body(
            "Rate limit exceeded: free-models-per-min. Add 10 credits to unlock 1000 free "
            "model requests per day",
            (NOW + 30) * 1000,
        ),
        None,
    ),
    (
        "openrouter",
        429,
        {"retry-after": "10"},
        body("google/gemma-3-27b-it:free is temporarily rate-limited upstream."),
        None,
    ),
    # google-ai: the quota id says the window; a daily one waits for Pacific midnight
    ("google-ai", 429, {}, gemini_body(RPD), PACIFIC_MIDNIGHT),
    ("google-ai", 429, {}, gemini_body(RPD, wrap=True), PACIFIC_MIDNIGHT),
    ("google-ai", 429, {}, gemini_body(RPM, RPD), PACIFIC_MIDNIGHT),
    ("google-ai", 429, {}, gemini_body(RPM), None),
    ("google-ai", 429, {}, gemini_body(TPM), None),
    # mistral has only minute quotas
    ("mistral", 429, MISTRAL_OK, b'{"message":"Requests rate limit exceeded"}', None),
    # generic-openai: any family's daily reading counts
    (
        "generic-openai",
        429,
        {"x-ratelimit-remaining-requests-day": "0", "x-ratelimit-reset-requests-day": "120"},
        b"",
        NOW + 120,
    ),
    ("generic-openai", 429, {}, GROQ_RPD, UTC_MIDNIGHT),
    ("generic-openai", 429, {}, gemini_body(RPD), UTC_MIDNIGHT),
    ("generic-openai", 429, {"retry-after": "30"}, b"slow down", None),
    # plain-text bodies are read too
    ("generic-openai", 429, {}, b"Too many requests per day", UTC_MIDNIGHT),
]


@pytest.mark.parametrize(("dialect", "status", "raw", "payload", "expected"), DAILY_CASES)
def test_daily_exhausted(dialect, status, raw, payload, expected):
    got = daily_exhausted(D[dialect], status, headers(raw), payload, now=NOW)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-3)


GEMINI_JUNK = [
    b"",
    b"not json",
    b"\xff\xfe",
    b"[]",
    b"[1]",
    b"null",
    b'"error"',
    b'{"error": "x"}',
    b'{"error": {"details": "x"}}',
    b'{"error": {"details": [1, null, "x", {"@type": 5}]}}',
    b'{"error": {"details": [{"@type": "x.QuotaFailure", "violations": null}]}}',
    b'{"error": {"details": [{"@type": "x.QuotaFailure", "violations": [1, {"quotaId": 5}]}]}}',
    b'{"error": {"details": [{"@type": "x.RetryInfo", "retryDelay": 52}]}}',
    b'{"error": {"metadata": {"headers": [1, 2]}}}',
    b'{"error": {"metadata": {"headers": {"X-RateLimit-Reset": null}}}}',
    b"[" * 60_000,  # deep enough to hit the recursion limit
    b"[" * 100_000,  # too big to bother parsing
]


@pytest.mark.parametrize("payload", GEMINI_JUNK)
@pytest.mark.parametrize("dialect", ALL)
def test_junk_bodies_are_ignored(dialect, payload):
    assert read_body(D[dialect], payload, now=NOW) == []
    assert daily_exhausted(D[dialect], 429, headers({}), payload, now=NOW) is None


def test_gemini_body_readings():
    got = read_body(D["google-ai"], gemini_body(RPM, RPD, TPM), now=NOW)
    assert got == [
        R("requests", "minute", 50, 0, NOW + 52.45, "body"),
        R("requests", "day", 50, 0, PACIFIC_MIDNIGHT, "body"),
        R("tokens", "minute", 50, 0, NOW + 52.45, "body"),
    ]
    # no RetryInfo: a minute quota refills with the minute
    no_retry = json.loads(gemini_body(RPM))
    no_retry["error"]["details"].pop()
    (reading,) = read_body(D["google-ai"], json.dumps(no_retry).encode(), now=NOW)
    assert reading.reset_at == MINUTE_END


# -- day boundaries --------------------------------------------------------------

BOUNDARY_CASES = [
    # google-ai: midnight America/Los_Angeles, DST-correct
    ("google-ai", at(2026, 7, 15, 12, tz=PDT), at(2026, 7, 16, tz=PDT)),
    ("google-ai", at(2026, 1, 15, 12, tz=PST), at(2026, 1, 16, tz=PST)),
    ("google-ai", at(2026, 7, 15, 23, 59, 59, tz=PDT), at(2026, 7, 16, tz=PDT)),
    ("google-ai", at(2026, 7, 16, 0, 0, 1, tz=PDT), at(2026, 7, 17, tz=PDT)),
    ("google-ai", at(2026, 7, 16, tz=PDT), at(2026, 7, 17, tz=PDT)),
    ("google-ai", at(2026, 1, 15, 23, 59, 59, tz=PST), at(2026, 1, 16, tz=PST)),
    ("google-ai", at(2026, 1, 16, 0, 0, 1, tz=PST), at(2026, 1, 17, tz=PST)),
    # evening in California is already tomorrow in UTC
    ("google-ai", at(2026, 7, 15, 20, tz=PDT), at(2026, 7, 16, 7)),
    # the 23-hour and 25-hour days
    ("google-ai", at(2026, 3, 8, 0, 30, tz=PST), at(2026, 3, 9, tz=PDT)),
    ("google-ai", at(2026, 11, 1, 0, 30, tz=PDT), at(2026, 11, 2, tz=PST)),
    # everyone else: UTC midnight
    ("openrouter", at(2026, 7, 15, 23, 59, 59), at(2026, 7, 16)),
    ("openrouter", at(2026, 7, 16, 0, 0, 1), at(2026, 7, 17)),
    # ... so a UTC provider's next day there is the day after
    ("openrouter", at(2026, 7, 15, 20, tz=PDT), at(2026, 7, 17)),
    ("groq", at(2026, 1, 15, 12), at(2026, 1, 16)),
    ("cerebras", at(2026, 1, 16), at(2026, 1, 17)),
    ("openai", at(2026, 12, 31, 23, 59, 59), at(2027, 1, 1)),
    ("mistral", at(2026, 1, 15, 12), at(2026, 1, 16)),
    ("generic-openai", at(2026, 1, 15, 12), at(2026, 1, 16)),
    ("some-future-preset", at(2026, 1, 15, 12), at(2026, 1, 16)),
]


@pytest.mark.parametrize(("dialect", "now", "expected"), BOUNDARY_CASES)
def test_next_day_boundary(dialect, now, expected):
    assert next_day_boundary(dialect_named(dialect), now) == expected


def test_a_missing_tz_database_falls_back_to_pacific_standard_time():
    zone = _zone("Nowhere/Atlantis")
    assert datetime(2026, 1, 15, tzinfo=zone).timestamp() == at(2026, 1, 15, tz=PST)


def test_dst_days_really_are_23_and_25_hours():
    spring = next_day_boundary(D["google-ai"], at(2026, 3, 8, tz=PST))
    assert spring - at(2026, 3, 8, tz=PST) == 23 * 3600
    fall = next_day_boundary(D["google-ai"], at(2026, 11, 1, tz=PDT))
    assert fall - at(2026, 11, 1, tz=PDT) == 25 * 3600


@pytest.mark.parametrize(
    ("window", "now", "expected"),
    [
        ("minute", NOW, MINUTE_END),
        ("minute", at(2027, 1, 15, 8, 1), at(2027, 1, 15, 8, 2)),
        ("hour", NOW, at(2027, 1, 15, 9)),
        ("hour", at(2027, 1, 15, 8, 59, 59), at(2027, 1, 15, 9)),
        ("day", NOW, UTC_MIDNIGHT),
        ("day", at(2027, 1, 15, 23, 59, 59), UTC_MIDNIGHT),
        ("day", UTC_MIDNIGHT, at(2027, 1, 17)),
    ],
)
def test_window_end(window, now, expected):
    assert window_end(window, now) == expected
