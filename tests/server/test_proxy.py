"""End to end: the official openai SDK -> chain429 -> fake providers, all real HTTP."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from chain429.fakes.provider import Reply
from fixtures.servers import PROXY_KEY, chain_config, provider_entry

HELLO = [{"role": "user", "content": "hi"}]


def two_entry_proxy(fake, proxy, first=None, second=None, settings=None):
    a = fake("a", default=first)
    b = fake("b", default=second)
    config = chain_config(
        [provider_entry("a", a), provider_entry("b", b)],
        [("a", "model-a"), ("b", "model-b")],
        settings=settings,
    )
    return a, b, proxy(config)


def create(client, **kwargs):
    kwargs.setdefault("model", "main")
    kwargs.setdefault("messages", HELLO)
    return client.chat.completions.with_raw_response.create(**kwargs)


def test_first_entry_answers_with_headers_naming_it(fake, proxy):
    a, b, p = two_entry_proxy(fake, proxy)
    raw = create(p.openai())
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from a"
    assert raw.headers["x-429chain-provider"] == "a/model-a"
    assert raw.headers["x-429chain-attempts"] == "1"
    assert raw.headers["x-429chain-trace"] == "a/model-a=200"
    assert len(b.requests) == 0


def test_429_falls_through_then_cooldown_skips_without_a_call(fake, proxy):
    a, b, p = two_entry_proxy(fake, proxy, first=Reply.rate_limited(retry_after="30"))
    client = p.openai()
    first = create(client)
    assert first.parse().choices[0].message.content == "Hello from b"
    assert first.headers["x-429chain-trace"] == "a/model-a=429,b/model-b=200"
    assert first.headers["x-429chain-attempts"] == "2"
    assert first.headers["x-429chain-provider"] == "b/model-b"

    second = create(client)
    assert second.headers["x-429chain-trace"] == "a/model-a=skip:cooldown,b/model-b=200"
    assert second.headers["x-429chain-attempts"] == "1"
    assert len(a.requests) == 1  # the cooling entry was not asked again


def test_ratelimits_shows_the_cooldown(fake, proxy):
    a, b, p = two_entry_proxy(fake, proxy, first=Reply.rate_limited(retry_after="30"))
    create(p.openai())
    with p.http() as http:
        data = http.get("/v1/ratelimits").json()
    state = {(e["provider"], e["model"]): e["state"] for e in data["entries"]}
    assert state == {("a", "model-a"): "cooling", ("b", "model-b"): "available"}
    (block,) = data["blocks"]
    assert block["key"] == "bucket:a/model-a"
    assert 28_000 < block["remaining_ms"] <= 32_000
    assert block["until"].endswith("Z")


def test_all_exhausted_is_503_with_retry_after_and_no_keys(fake, proxy):
    a, b, p = two_entry_proxy(
        fake,
        proxy,
        first=Reply.rate_limited(retry_after="40"),
        second=Reply.rate_limited(retry_after="12"),
    )
    with pytest.raises(openai.APIStatusError) as caught:
        create(p.openai())
    err = caught.value
    assert err.status_code == 503
    body = err.response.json()
    assert body["error"]["code"] == "all_providers_exhausted"
    assert body["error"]["type"] == "server_error"
    assert body["error"]["param"] is None
    assert "a/model-a: 429" in body["error"]["message"]
    assert "b/model-b: 429" in body["error"]["message"]
    assert "secret-" not in err.response.text
    # The earliest recovery (12 s), plus the little jitter recoveries carry.
    assert 12 <= int(err.response.headers["retry-after"]) <= 13
    assert err.response.headers["x-429chain-attempts"] == "2"

    # Now both cool down: no upstream call at all, still a 503 that says when to come back.
    with pytest.raises(openai.APIStatusError) as again:
        create(p.openai())
    assert again.value.response.headers["x-429chain-trace"] == (
        "a/model-a=skip:cooldown,b/model-b=skip:cooldown"
    )
    assert again.value.response.headers["x-429chain-attempts"] == "0"
    assert len(a.requests) == len(b.requests) == 1


def test_client_error_is_returned_unchanged_and_not_retried(fake, proxy):
    body = {
        "error": {
            "message": "temperature too high",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": None,
        }
    }
    a, b, p = two_entry_proxy(fake, proxy, first=Reply(status=400, body=body))
    with pytest.raises(openai.BadRequestError) as caught:
        create(p.openai(), temperature=9)
    assert caught.value.response.json() == body
    assert caught.value.response.headers["x-429chain-trace"] == "a/model-a=400"
    assert len(b.requests) == 0


def test_context_length_400_falls_through(fake, proxy):
    too_long = Reply.error(
        400, "maximum context length is 8192 tokens", code="context_length_exceeded"
    )
    a, b, p = two_entry_proxy(fake, proxy, first=too_long)
    raw = create(p.openai())
    assert raw.headers["x-429chain-trace"] == "a/model-a=400,b/model-b=200"


@pytest.mark.parametrize(
    ("reply", "token"),
    [
        (Reply.error(500, "boom"), "500"),
        (Reply.error(503, "overloaded"), "503"),
        (Reply.error(408, "timeout"), "408"),
        (Reply(status=200, body="<html>not json</html>"), "invalid_body"),
        # The body is cut half way: a reset, not a success.
        (Reply(cut_after=10), "connection_reset"),
    ],
)
def test_transient_failures_fall_through_without_cooldown(fake, proxy, reply, token):
    a, b, p = two_entry_proxy(fake, proxy, first=reply)
    client = p.openai()
    assert create(client).headers["x-429chain-trace"] == f"a/model-a={token},b/model-b=200"
    # No cooldown: the next request asks the first entry again.
    assert create(client).headers["x-429chain-trace"] == f"a/model-a={token},b/model-b=200"
    assert len(a.requests) == 2


def test_402_cools_down_every_entry_of_that_provider(fake, proxy):
    a = fake("a", default=Reply.error(402, "insufficient credits"))
    b = fake("b")
    config = chain_config(
        [provider_entry("a", a), provider_entry("b", b)],
        [("a", "one"), ("a", "two"), ("b", "three")],
    )
    p = proxy(config)
    raw = create(p.openai())
    assert raw.headers["x-429chain-trace"] == "a/one=402,a/two=skip:quota,b/three=200"


def test_401_from_provider_marks_it_unhealthy(fake, proxy):
    a, b, p = two_entry_proxy(fake, proxy, first=Reply.error(401, "bad key"))
    client = p.openai()
    assert create(client).headers["x-429chain-trace"] == "a/model-a=401,b/model-b=200"
    assert create(client).headers["x-429chain-trace"] == "a/model-a=skip:unhealthy,b/model-b=200"


def test_timeout_and_connect_error_fall_through(fake, proxy):
    slow = fake("slow", default=Reply(delay=2.0))
    ok = fake("ok")
    config = chain_config(
        [
            provider_entry("slow", slow, timeout=200),
            # Nothing listens on port 9 of loopback: connection refused.
            {"id": "gone", "type": "generic-openai", "baseUrl": "http://127.0.0.1:9/v1"},
            provider_entry("ok", ok),
        ],
        [("slow", "s"), ("gone", "g"), ("ok", "o")],
    )
    p = proxy(config)
    started = time.monotonic()
    raw = create(p.openai())
    assert raw.headers["x-429chain-trace"] == "slow/s=timeout,gone/g=connect_error,ok/o=200"
    assert time.monotonic() - started < 1.5


def test_request_reaches_provider_unchanged_except_model(fake, proxy):
    a, b, p = two_entry_proxy(fake, proxy)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    raw = create(
        p.openai(),
        tools=tools,
        tool_choice="auto",
        temperature=0.3,
        seed=7,
        user="u1",
        response_format={"type": "json_object"},
        max_tokens=12,
        extra_body={"provider_specific": {"x": [1, 2]}},
    )
    sent = a.requests[0].json()
    assert sent == {
        "model": "model-a",
        "messages": HELLO,
        "tools": tools,
        "tool_choice": "auto",
        "temperature": 0.3,
        "seed": 7,
        "user": "u1",
        "response_format": {"type": "json_object"},
        "max_tokens": 12,
        "provider_specific": {"x": [1, 2]},
    }
    assert "stream_options" not in sent
    # The client sees the model the provider reported, not the chain name.
    assert raw.parse().model == "model-a"


def test_stream_options_go_upstream_only_with_a_stream(fake, proxy):
    """OpenAI refuses `stream_options` on a call that does not stream (a 400)."""
    a, b, p = two_entry_proxy(fake, proxy)
    create(p.openai(), stream_options={"include_usage": True})
    assert "stream_options" not in a.requests[0].json()
    create(p.openai(), stream=False, stream_options={"include_usage": True})
    assert "stream_options" not in a.requests[1].json()


def test_provider_key_and_extra_headers_reach_the_provider(fake, proxy):
    a = fake("a")
    extra = {"HTTP-Referer": "https://example.test", "X-Title": "chain429 tests"}
    p = proxy(chain_config([provider_entry("a", a, headers=extra)], [("a", "m")]))
    create(p.openai())
    headers = a.requests[0].headers
    assert headers["authorization"] == "Bearer secret-a"
    assert headers["http-referer"] == "https://example.test"
    assert headers["x-title"] == "chain429 tests"
    assert PROXY_KEY not in json.dumps(headers)  # the client's key stays with us


def test_unknown_model_uses_default_chain_unless_strict(fake, proxy):
    a, b, p = two_entry_proxy(fake, proxy)
    unknown = create(p.openai(), model="gpt-4o")
    assert unknown.headers["x-429chain-provider"] == "a/model-a"
    assert unknown.headers["x-429chain-chain"] == "main"
    assert unknown.headers["x-429chain-route"] == "default"

    a2, b2, strict = two_entry_proxy(fake, proxy, settings={"strictModels": True})
    with pytest.raises(openai.NotFoundError) as caught:
        create(strict.openai(), model="gpt-4o")
    assert caught.value.code == "model_not_found"
    assert "main" in caught.value.message
    assert len(a2.requests) == 0


def test_normalize_responses_moves_reasoning_into_empty_content(fake, proxy):
    body = {
        "id": "r",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "", "reasoning_content": "42"},
            }
        ],
    }
    a, b, p = two_entry_proxy(
        fake, proxy, first=Reply(body=body), settings={"normalizeResponses": True}
    )
    message = create(p.openai()).parse().choices[0].message
    assert message.content == "42"
    a2, b2, plain = two_entry_proxy(fake, proxy, first=Reply(body=body))
    assert create(plain.openai()).parse().choices[0].message.content == ""


def test_client_disconnect_cancels_the_upstream_call(fake, proxy, caplog):
    a, b, p = two_entry_proxy(fake, proxy, first=Reply(delay=3.0))
    with pytest.raises(openai.APITimeoutError):
        create(p.openai(timeout=0.3))
    deadline = time.monotonic() + 2
    while a.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert a.disconnects == 1
    assert len(b.requests) == 0  # a cancelled request does not walk on
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_models_lists_chains_then_entry_models(fake, proxy):
    a, b, p = two_entry_proxy(fake, proxy)
    models = p.openai().models.list()
    ids = [(m.id, m.owned_by, m.kind) for m in models.data]
    assert ids == [
        ("main", "chain429", "chain"),
        ("model-a", "a", "model"),
        ("model-b", "b", "model"),
    ]
    assert all(m.object == "model" for m in models.data)


def shared_model_proxy(fake, proxy, settings=None):
    """Two chains; `llama-70b` is served by two providers, in different chains."""
    groq, cerebras, other = fake("groq"), fake("cerebras"), fake("other")
    config = {
        "version": 1,
        "settings": {"apiKeys": [PROXY_KEY], "defaultChain": "fast", **(settings or {})},
        "providers": [
            provider_entry("groq", groq),
            provider_entry("cerebras", cerebras),
            provider_entry("other", other),
        ],
        "chains": [
            {"name": "fast", "entries": [{"provider": "other", "model": "small"}]},
            {
                "name": "smart",
                "entries": [
                    {"provider": "groq", "model": "llama-70b"},
                    {"provider": "other", "model": "small"},
                    {"provider": "cerebras", "model": "llama-70b"},
                ],
            },
            {"name": "again", "entries": [{"provider": "groq", "model": "llama-70b"}]},
        ],
    }
    return groq, cerebras, other, proxy(config)


def test_an_entry_model_fails_over_across_the_providers_that_serve_it(fake, proxy):
    groq, cerebras, other, p = shared_model_proxy(fake, proxy)
    groq.script(Reply.rate_limited(retry_after="60"))
    answer = create(p.openai(), model="llama-70b")
    assert answer.headers["x-429chain-trace"] == "groq/llama-70b=429,cerebras/llama-70b=200"
    assert answer.headers["x-429chain-chain"] == "llama-70b"
    assert answer.headers["x-429chain-route"] == "model"
    assert other.requests == []
    listed = {m.id: m for m in p.openai().models.list().data}
    assert listed["llama-70b"].kind == "model"
    assert listed["llama-70b"].providers == ["groq", "cerebras"]
    assert listed["smart"].kind == "chain"


def test_a_chain_name_wins_over_an_entry_model(fake, proxy):
    groq, cerebras, other, p = shared_model_proxy(fake, proxy)
    named = create(p.openai(), model="smart")
    assert named.headers["x-429chain-route"] == "chain"
    assert named.headers["x-429chain-provider"] == "groq/llama-70b"


def test_strict_models_still_select_entry_models(fake, proxy):
    groq, cerebras, other, p = shared_model_proxy(fake, proxy, {"strictModels": True})
    assert create(p.openai(), model="llama-70b").headers["x-429chain-route"] == "model"
    with pytest.raises(openai.NotFoundError):
        create(p.openai(), model="big-70b")


def test_health_is_public(fake, proxy):
    a, b, p = two_entry_proxy(fake, proxy)
    health = httpx.get(f"{p.url}/health").json()
    assert health["status"] == "ok"
    assert health["config_generation"] == 1
    assert health["uptime_s"] >= 0
    from chain429 import __version__

    assert health["version"] == __version__


def test_wrong_or_missing_key_is_401_in_openai_shape(fake, proxy):
    a, b, p = two_entry_proxy(fake, proxy)
    bad = openai.OpenAI(base_url=f"{p.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.chat.completions.create(model="main", messages=HELLO)
    assert caught.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    missing = httpx.get(f"{p.url}/v1/models")
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert len(a.requests) == 0


def test_x_api_key_header_is_accepted(fake, proxy):
    a, b, p = two_entry_proxy(fake, proxy)
    response = httpx.get(f"{p.url}/v1/models", headers={"x-api-key": PROXY_KEY})
    assert response.status_code == 200


def test_admin_keys_reach_proxy_routes(fake, proxy):
    a, b, p = two_entry_proxy(fake, proxy, settings={"adminKeys": ["admin-secret"]})
    admin = openai.OpenAI(base_url=f"{p.url}/v1", api_key="admin-secret", max_retries=0)
    assert create(admin).parse().choices[0].message.content == "Hello from a"


def test_no_api_keys_serves_openly_on_loopback(fake, proxy):
    a, b, p = two_entry_proxy(fake, proxy, settings={"apiKeys": []})
    response = httpx.post(f"{p.url}/v1/chat/completions", json={"messages": HELLO})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty"),
        (b"[1, 2]", "JSON object"),
        (b'{"model": "main"}', "messages"),
        (b'{"model": "main", "messages": []}', "messages"),
        (b'{"model": "main", "messages": ["hi"]}', "messages"),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "model"),
    ],
)
def test_bad_bodies_are_400_before_any_upstream_call(fake, proxy, body, fragment):
    a, b, p = two_entry_proxy(fake, proxy)
    with p.http() as http:
        response = http.post(
            "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"]
    assert len(a.requests) == 0


def test_missing_messages_raises_bad_request_in_the_sdk(fake, proxy):
    a, b, p = two_entry_proxy(fake, proxy)
    with pytest.raises(openai.BadRequestError):
        p.openai().chat.completions.create(model="main", messages=[])


def test_body_over_max_body_bytes_is_413(fake, proxy):
    a, b, p = two_entry_proxy(fake, proxy, settings={"maxBodyBytes": 1024})
    big = json.dumps({"model": "main", "messages": [{"role": "user", "content": "x" * 4096}]})
    with p.http() as http:
        response = http.post(
            "/v1/chat/completions", content=big, headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert len(a.requests) == 0


def test_unknown_route_is_404_in_openai_shape(fake, proxy):
    a, b, p = two_entry_proxy(fake, proxy)
    with p.http() as http:
        response = http.get("/v1/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_body_that_stalls_times_out_and_falls_through(fake, proxy):
    stalls = fake("stalls", default=Reply(stall_after=10))
    ok = fake("ok")
    config = chain_config(
        [provider_entry("stalls", stalls, timeout=300), provider_entry("ok", ok)],
        [("stalls", "s"), ("ok", "o")],
    )
    p = proxy(config)
    started = time.monotonic()
    assert create(p.openai()).headers["x-429chain-trace"] == "stalls/s=timeout,ok/o=200"
    assert time.monotonic() - started < 2


def test_the_request_log_says_which_chain_and_why(fake, proxy, tmp_path):
    from chain429.requestlog.database import migrate, open_database
    from chain429.requestlog.writer import Telemetry

    groq, other = fake("groq"), fake("other")
    database = open_database(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(database)
    config = {
        "version": 1,
        "settings": {"apiKeys": [PROXY_KEY], "defaultChain": "fast"},
        "providers": [provider_entry("groq", groq), provider_entry("other", other)],
        "chains": [
            {"name": "fast", "entries": [{"provider": "other", "model": "small"}]},
            {"name": "smart", "entries": [{"provider": "groq", "model": "llama-70b"}]},
        ],
    }
    p = proxy(config, telemetry=Telemetry(database, batch_interval_s=0.01))
    ids = {
        model: create(p.openai(), model=model).headers["x-request-id"]
        for model in ("smart", "llama-70b", "gpt-4o")
    }
    time.sleep(0.3)  # the writer's batch window
    with p.http() as http:
        rows = {m: http.get(f"/v1/stats/requests/{i}").json() for m, i in ids.items()}
    assert [(rows[m]["chain"], rows[m]["route"]) for m in ids] == [
        ("smart", "chain"),
        ("llama-70b", "model"),
        ("fast", "default"),
    ]
