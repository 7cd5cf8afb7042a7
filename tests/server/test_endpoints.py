"""`/v1/embeddings` and `/v1/completions` end to end: the official openai SDK -> chain429 ->
fake providers, through the same waterfall, limits, trace and request log as chat."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from chain429.fakes.provider import Reply
from chain429.fakes.replies import embedding, route_of
from chain429.requestlog.database import migrate, open_database
from chain429.requestlog.writer import Telemetry
from fixtures.servers import PROXY_KEY, provider_entry

HELLO = [{"role": "user", "content": "hi"}]


def config(a, b, *, default="main", settings=None):
    """A chat chain `main` and an embeddings chain `embed`, both a -> b."""
    return {
        "version": 1,
        "settings": {"apiKeys": [PROXY_KEY], "defaultChain": default, **(settings or {})},
        "providers": [provider_entry("a", a), provider_entry("b", b)],
        "chains": [
            {
                "name": "main",
                "entries": [
                    {"provider": "a", "model": "chat-a"},
                    {"provider": "b", "model": "chat-b"},
                ],
            },
            {
                "name": "embed",
                "kind": "embeddings",
                "entries": [
                    {"provider": "a", "model": "embed-a"},
                    {"provider": "b", "model": "embed-b"},
                ],
            },
        ],
    }


def start(fake, proxy, first=None, *, telemetry=None, **options):
    a = fake("a", default=first)
    b = fake("b")
    kwargs = {"telemetry": telemetry} if telemetry is not None else {}
    return a, b, proxy(config(a, b, **options), **kwargs)


def logged(tmp_path):
    database = open_database(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(database)
    return Telemetry(database, batch_interval_s=0.01)


def wait_logged(p, n):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with p.http() as http:
            rows = http.get("/v1/stats/requests").json()["data"]
        if len(rows) >= n:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"{n} requests were not logged")


# -- embeddings ------------------------------------------------------------------


def test_embeddings_fail_over_from_a_429_to_the_next_entry(fake, proxy):
    a, b, p = start(fake, proxy, Reply.rate_limited(retry_after="30"))
    client = p.openai()
    raw = client.embeddings.with_raw_response.create(model="embed", input=["hello", "world"])
    answer = raw.parse()
    assert raw.headers["x-429chain-trace"] == "a/embed-a=429,b/embed-b=200"
    assert raw.headers["x-429chain-provider"] == "b/embed-b"
    assert raw.headers["x-429chain-chain"] == "embed"
    # The SDK asks for base64 and decodes it: the fake's vectors, float32-exact.
    assert [d.index for d in answer.data] == [0, 1]
    assert answer.data[0].embedding == pytest.approx(embedding("hello"), abs=1e-6)
    assert answer.data[1].embedding == pytest.approx(embedding("world"), abs=1e-6)
    assert answer.usage.prompt_tokens >= 2
    # Each entry was asked at its /embeddings with its own model, the rest of the body as sent.
    assert [route_of(r.path) for r in (*a.requests, *b.requests)] == ["embeddings"] * 2
    sent = b.requests[0].json()
    assert sent["model"] == "embed-b" and sent["input"] == ["hello", "world"]
    assert sent["encoding_format"] == "base64"

    again = client.embeddings.with_raw_response.create(model="embed", input="hello")
    assert again.headers["x-429chain-trace"] == "a/embed-a=skip:cooldown,b/embed-b=200"
    assert len(a.requests) == 1  # the cooldown holds without another call
    floats = client.embeddings.create(model="embed", input="hello", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(embedding("hello"), abs=1e-6)


def test_an_embedding_model_name_picks_the_entries_serving_it(fake, proxy):
    a, b, p = start(fake, proxy)
    raw = p.openai().embeddings.with_raw_response.create(model="embed-b", input="x")
    assert raw.headers["x-429chain-route"] == "model"
    assert raw.headers["x-429chain-provider"] == "b/embed-b"


def test_all_embedding_entries_exhausted_is_the_usual_503(fake, proxy):
    a, b, p = start(fake, proxy, Reply.rate_limited(retry_after="20"))
    b.always(Reply.rate_limited(retry_after="9"))
    with pytest.raises(openai.APIStatusError) as caught:
        p.openai().embeddings.create(model="embed", input="x")
    assert caught.value.status_code == 503
    assert caught.value.response.json()["error"]["code"] == "all_providers_exhausted"
    assert 9 <= int(caught.value.response.headers["retry-after"]) <= 10


# -- legacy completions ---------------------------------------------------------


def test_completions_fail_over_on_a_chat_chain(fake, proxy):
    a, b, p = start(fake, proxy, Reply.error(503, "overloaded"))
    raw = p.openai().completions.with_raw_response.create(model="main", prompt="Say hi")
    completion = raw.parse()
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "Hello from b"
    assert raw.headers["x-429chain-trace"] == "a/chat-a=503,b/chat-b=200"
    assert [route_of(r.path) for r in b.requests] == ["completions"]
    assert b.requests[0].json() == {"model": "chat-b", "prompt": "Say hi"}


def test_completions_stream_through_the_same_relay(fake, proxy):
    a, b, p = start(fake, proxy, Reply.rate_limited(retry_after="30"))
    raw = p.openai().completions.with_raw_response.create(
        model="main", prompt="Say hi", stream=True
    )
    assert raw.headers["x-429chain-trace"] == "a/chat-a=429,b/chat-b=200"
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks) == "Hello from b"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_stream_cut_mid_answer_ends_with_an_error_event(fake, proxy):
    cut = Reply.stream("", pieces=["one", " two", " three"], cut_after=2, legacy=True)
    a, b, p = start(fake, proxy, cut)
    stream = p.openai().completions.create(model="main", prompt="count", stream=True)
    with pytest.raises(openai.APIError, match=r"closed the stream|cut the stream"):
        for _ in stream:
            pass
    assert len(b.requests) == 0  # after the first token the answer is a's or nobody's


def test_a_provider_without_completions_is_passed_over_and_not_cooled(fake, proxy):
    """A 404 on /completions says nothing about the entry's chat: no cooldown."""

    def chat_only(request):
        if route_of(request.path) == "completions":
            return Reply.error(404, "Invalid URL (POST /v1/completions)")
        return Reply()

    a, b, p = start(fake, proxy, chat_only)
    client = p.openai()
    for _ in range(2):
        raw = client.completions.with_raw_response.create(model="main", prompt="hi")
        assert raw.headers["x-429chain-trace"] == "a/chat-a=404,b/chat-b=200"
    chat = client.chat.completions.with_raw_response.create(model="main", messages=HELLO)
    assert chat.headers["x-429chain-trace"] == "a/chat-a=200"


# -- the wrong kind of chain, and unknown models ---------------------------------


@pytest.mark.parametrize(
    ("path", "body", "named", "sent_to"),
    [
        ("/v1/embeddings", {"model": "main", "input": "x"}, "a chat chain", "/v1/chat/completions"),
        ("/v1/embeddings", {"model": "chat-b", "input": "x"}, "a chat model", "/v1/completions"),
        (
            "/v1/chat/completions",
            {"model": "embed", "messages": HELLO},
            "an embeddings chain",
            "/v1/embeddings",
        ),
        (
            "/v1/completions",
            {"model": "embed", "prompt": "x"},
            "an embeddings chain",
            "/v1/embeddings",
        ),
    ],
)
def test_a_chain_of_the_other_kind_is_a_404_before_any_call(
    fake, proxy, path, body, named, sent_to
):
    a, b, p = start(fake, proxy)
    with p.http() as http:
        response = http.post(path, json=body)
    assert response.status_code == 404  # as OpenAI answers a chat route an embedding model
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (
        "wrong_endpoint",
        "model",
        "invalid_request_error",
    )
    assert named in error["message"] and sent_to in error["message"]
    assert a.requests == b.requests == []


def test_the_sdk_raises_not_found_for_the_wrong_kind(fake, proxy):
    a, b, p = start(fake, proxy)
    with pytest.raises(openai.NotFoundError, match="embeddings chains: embed"):
        p.openai().embeddings.create(model="main", input="x")


def test_an_unknown_model_uses_the_default_chain_only_of_the_right_kind(fake, proxy):
    a, b, p = start(fake, proxy)  # the default chain is the chat chain `main`
    client = p.openai()
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert caught.value.response.json()["error"]["code"] == "model_not_found"
    assert "embeddings chains: embed" in caught.value.response.json()["error"]["message"]
    raw = client.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt="x")
    assert raw.headers["x-429chain-route"] == "default"

    a2, b2, embeds = start(fake, proxy, default="embed")
    raw = embeds.openai().embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="x"
    )
    assert (raw.headers["x-429chain-chain"], raw.headers["x-429chain-route"]) == (
        "embed",
        "default",
    )


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/embeddings", {"model": "embed"}, "input"),
        ("/v1/embeddings", {"model": "embed", "input": ""}, "input"),
        ("/v1/embeddings", {"model": "embed", "input": []}, "input"),
        ("/v1/embeddings", {"model": "embed", "input": [[]]}, "input"),
        ("/v1/embeddings", {"model": "embed", "input": [1, "a"]}, "input"),
        ("/v1/embeddings", {"model": "embed", "input": {"text": "a"}}, "input"),
        (
            "/v1/embeddings",
            {"model": "embed", "input": "a", "encoding_format": "int8"},
            "encoding_format",
        ),
        ("/v1/embeddings", {"model": "embed", "input": "a", "dimensions": 0}, "dimensions"),
        ("/v1/embeddings", {"model": 5, "input": "a"}, "model"),
        ("/v1/completions", {"model": "main"}, "prompt"),
        ("/v1/completions", {"model": "main", "prompt": [-1]}, "prompt"),
        ("/v1/completions", {"model": "main", "prompt": None}, "prompt"),
        ("/v1/completions", {"model": "main", "prompt": "x", "stream": "yes"}, "stream"),
        ("/v1/completions", {"model": "main", "prompt": "x", "max_tokens": -3}, "max_tokens"),
    ],
)
def test_bad_bodies_are_400s_naming_the_field(fake, proxy, path, body, param):
    a, b, p = start(fake, proxy)
    with p.http() as http:
        response = http.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert a.requests == b.requests == []


def test_models_say_what_each_chain_serves(fake, proxy):
    a, b, p = start(fake, proxy)
    listed = {m.id: m.model_extra for m in p.openai().models.list().data}
    assert listed["main"]["chain_kind"] == "chat"
    assert listed["main"]["endpoints"] == ["/v1/chat/completions", "/v1/completions"]
    assert listed["embed"]["chain_kind"] == "embeddings"
    assert listed["embed"]["endpoints"] == ["/v1/embeddings"]
    assert (listed["embed-a"]["kind"], listed["embed-a"]["chain_kind"]) == ("model", "embeddings")


# -- request log, stats, metrics ---------------------------------------------------


def test_the_request_log_and_stats_tell_the_endpoints_apart(fake, proxy, tmp_path):
    a, b, p = start(fake, proxy, telemetry=logged(tmp_path))
    client = p.openai()
    client.chat.completions.create(model="main", messages=HELLO)
    client.embeddings.create(model="embed", input=["one", "two"])
    client.embeddings.create(model="embed", input="three")
    list(client.completions.create(model="main", prompt="hi", stream=True))
    with p.http() as http:
        http.post("/v1/embeddings", json={"model": "main", "input": "x"})  # 404 wrong_endpoint
    rows = wait_logged(p, 5)
    seen = sorted((r["endpoint"], r["chain"], r["outcome"], r["stream"]) for r in rows)
    assert seen == [
        ("chat", "main", "success", False),
        ("completions", "main", "success", True),
        ("embeddings", "embed", "success", False),
        ("embeddings", "embed", "success", False),
        ("embeddings", "main", "wrong_endpoint", False),
    ]
    embedded = [r for r in rows if r["endpoint"] == "embeddings" and r["outcome"] == "success"]
    # An embedding's usage has no completion tokens: 0, counted, not estimated.
    assert {(r["completion_tokens"], r["tokens_estimated"]) for r in embedded} == {(0, False)}
    assert all(r["prompt_tokens"] >= 1 for r in embedded)

    with p.http() as http:
        per = http.get("/v1/stats/endpoints").json()
        only = http.get("/v1/stats/summary", params={"endpoint": "embeddings"}).json()
        chains = http.get("/v1/stats/chains", params={"endpoint": "completions"}).json()
        page = http.get("/v1/stats/requests", params={"endpoint": "chat"}).json()
        bad = http.get("/v1/stats/summary", params={"endpoint": "embedding"})
        metrics = http.get("/metrics").text
    counts = {row["endpoint"]: (row["requests"], row["errors"]) for row in per["data"]}
    assert counts == {"chat": (1, 0), "completions": (1, 0), "embeddings": (3, 1)}
    assert (only["endpoint"], only["requests"], only["errors"]) == ("embeddings", 3, 1)
    assert [(c["chain"], c["requests"]) for c in chains["data"]] == [("main", 1)]
    assert [r["endpoint"] for r in page["data"]] == ["chat"]
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "endpoint"
    assert 'endpoint="embeddings"' in metrics and 'endpoint="completions"' in metrics


def test_stats_by_provider_count_only_that_endpoints_attempts(fake, proxy, tmp_path):
    a, b, p = start(fake, proxy, Reply.rate_limited(retry_after="30"), telemetry=logged(tmp_path))
    client = p.openai()
    client.embeddings.create(model="embed", input="x")  # a: 429, b: 200
    client.chat.completions.create(model="main", messages=HELLO)  # a: 429, b: 200
    client.chat.completions.create(model="main", messages=HELLO)  # a: skip, b: 200
    wait_logged(p, 3)
    with p.http() as http:
        embeds = http.get("/v1/stats/providers", params={"endpoint": "embeddings"}).json()
        chats = http.get("/v1/stats/providers", params={"endpoint": "chat"}).json()
    outcomes = {r["provider"]: r["attempts"]["outcomes"] for r in embeds["data"]}
    assert outcomes == {"a": {"429": 1}, "b": {"200": 1}}
    outcomes = {r["provider"]: r["attempts"]["outcomes"] for r in chats["data"]}
    assert outcomes == {"a": {"429": 1, "skip:cooldown": 1}, "b": {"200": 2}}


def test_a_chain_test_of_an_embeddings_chain_asks_for_an_embedding(fake, proxy):
    admin = "test-admin-key"
    a, b, p = start(fake, proxy, settings={"adminKeys": [admin]})
    headers = {"authorization": f"Bearer {admin}"}
    answer = httpx.post(f"{p.url}/v1/test/chain/embed", headers=headers, timeout=10).json()
    assert answer["working"] == 2
    assert [e["text"] for e in answer["entries"]] == ["16 dimensions"] * 2
    assert {route_of(r.path) for r in (*a.requests, *b.requests)} == {"embeddings"}
