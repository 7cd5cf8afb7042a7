"""The fake provider: a real local server, driven by real clients (httpx, openai SDK)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from openai import OpenAI

from chain429.fakes.provider import FakeProvider, ReceivedRequest, Reply

CHAT = {"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def groq() -> Iterator[FakeProvider]:
    # Not named `fake`: tests/conftest.py has a `fake` factory fixture.
    with FakeProvider("groq") as provider:
        yield provider


@pytest.fixture
def client(groq: FakeProvider) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=groq.base_url, timeout=5) as c:
        yield c


def wait_for(cond: Callable[[], bool], timeout: float = 2.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def test_default_reply_is_a_chat_completion_for_the_request(groq, client):
    r = client.post("/chat/completions", json=CHAT, headers={"Authorization": "Bearer k"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-fake-")
    assert body["model"] == "llama-3.1-8b"
    assert isinstance(body["created"], int)
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello from groq"}
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    [seen] = groq.requests
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.headers["authorization"] == "Bearer k"
    assert seen.json() == CHAT


def test_script_is_played_in_order_then_the_default(groq, client):
    groq.script(Reply.error(500, "boom"), Reply(status=201, body="plain"))
    got = [client.post("/chat/completions", json=CHAT) for _ in range(3)]
    assert [r.status_code for r in got] == [500, 201, 200]
    assert got[0].json()["error"] == {
        "message": "boom",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert got[1].text == "plain"
    groq.always(lambda req: Reply(status=418, body={"echo": req.json()["model"]}))
    assert client.post("/chat/completions", json=CHAT).json() == {"echo": "llama-3.1-8b"}
    assert len(groq.requests) == 4


def test_rate_limited_reply_carries_retry_after_and_extra_headers(client, groq):
    groq.script(Reply.rate_limited("30", headers={"x-ratelimit-remaining-requests": "0"}))
    r = client.post("/chat/completions", json=CHAT)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "30"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"


def test_models_and_unknown_paths(client):
    assert client.get("/models").json()["data"][0]["object"] == "model"
    r = client.get("/nope")
    assert r.status_code == 404
    assert "nope" in r.json()["error"]["message"]


def test_delay_holds_the_answer(groq, client):
    groq.script(Reply(delay=0.15))
    start = time.monotonic()
    assert client.post("/chat/completions", json=CHAT).status_code == 200
    assert time.monotonic() - start >= 0.15


def test_openai_sdk_reads_plain_and_streamed_answers(groq):
    groq.script(Reply(), Reply.stream("one two three", chunk_delay=0.001))
    with OpenAI(base_url=groq.base_url, api_key="x", max_retries=0) as sdk:
        done = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
        assert done.choices[0].message.content == "Hello from groq"
        stream = sdk.chat.completions.create(
            model="m-stream", messages=[{"role": "user", "content": "q"}], stream=True
        )
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "one two three"
    assert {c.model for c in chunks} == {"m-stream"}
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_cut_stream_is_an_error_for_the_client(groq, client):
    groq.script(Reply.stream("a b c d", cut_after=2))
    with client.stream("POST", "/chat/completions", json=CHAT) as r:
        assert r.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            for _ in r.iter_lines():
                pass


def test_cut_plain_body_is_an_error_for_the_client(groq, client):
    groq.script(Reply(cut_after=10))
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/chat/completions", json=CHAT)


def test_stalled_stream_times_out_the_reader(groq):
    groq.script(Reply.stream("a b c", stall_after=2))
    lines = []
    with (
        httpx.Client(base_url=groq.base_url, timeout=httpx.Timeout(5, read=0.2)) as c,
        c.stream("POST", "/chat/completions", json=CHAT) as r,
        pytest.raises(httpx.ReadTimeout),
    ):
        for line in r.iter_lines():
            lines.append(line)
    assert sum(line.startswith("data: ") for line in lines) == 2
    assert wait_for(lambda: groq.disconnects == 1)


def test_forever_keeps_sending_after_the_chunks_until_the_client_leaves(groq):
    role = {"choices": [{"index": 0, "delta": {"role": "assistant"}}], "model": None}
    groq.script(Reply(chunks=[role], forever=": ping\n\n", chunk_delay=0.01))
    lines = []
    with httpx.Client(base_url=groq.base_url, timeout=5) as c:
        with c.stream("POST", "/chat/completions", json=CHAT) as r:
            assert r.headers["content-type"] == "text/event-stream"
            for line in r.iter_lines():
                lines.append(line)
                if len(lines) >= 2 + 2 * 20:
                    break  # 20 keep-alives later, and it has not ended: leave
        assert lines[0].startswith("data: ") and '"llama-3.1-8b"' in lines[0]
        assert set(lines[2:]) == {": ping", ""}
    assert wait_for(lambda: groq.disconnects == 1)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_bomb_is_a_valid_body_of_zeros_that_httpx_inflates(groq, client, encoding):
    groq.script(Reply.bomb(3, encoding))
    r = client.post("/chat/completions", json=CHAT)
    assert r.headers["content-encoding"] == encoding
    assert int(r.headers["content-length"]) < 4000  # 3 KB for 3 MiB
    assert r.content == bytes(3 * 1024 * 1024)


def test_sized_is_a_chat_completion_of_exactly_that_size(groq, client):
    groq.script(Reply.sized(10_000))
    r = client.post("/chat/completions", json=CHAT)
    assert len(r.content) == 10_000
    assert r.json()["choices"][0]["message"]["content"].startswith("xxx")
    with pytest.raises(ValueError):
        Reply.sized(10)


def test_client_leaving_during_delay_counts_a_disconnect(groq):
    groq.script(Reply(delay=30))
    with (
        httpx.Client(base_url=groq.base_url, timeout=httpx.Timeout(5, read=0.1)) as c,
        pytest.raises(httpx.ReadTimeout),
    ):
        c.post("/chat/completions", json=CHAT)
    assert wait_for(lambda: groq.disconnects == 1)


def test_keep_alive_reuses_one_connection(groq, client):
    for _ in range(50):
        assert client.post("/chat/completions", json=CHAT).status_code == 200
    assert groq.connections_opened == 1
    assert len(groq.requests) == 50


def test_pipelined_requests_are_answered_in_order(groq):
    groq.script(Reply(delay=0.05, body="first"), Reply(body="second"))
    req = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    with socket.create_connection((groq.host, groq.port), timeout=2) as s:
        s.sendall(req * 2 + b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200") == 3
    assert data.index(b"first") < data.index(b"second") < data.index(b'"object":"list"')


def test_record_false_keeps_no_requests():
    with FakeProvider(record=False) as fake, httpx.Client(base_url=fake.base_url) as c:
        fake.always(lambda req: Reply(body={"path": req.path}))
        assert c.post("/chat/completions", json=CHAT).json() == {"path": "/v1/chat/completions"}
        assert fake.requests == []


def test_stop_closes_everything_and_leaks_no_tasks():
    async def scenario() -> None:
        async with FakeProvider() as fake:
            fake.script(Reply(delay=30), Reply.stream(stall_after=1))
            async with httpx.AsyncClient(base_url=fake.base_url, timeout=5) as c:
                slow = asyncio.ensure_future(c.post("/chat/completions", json=CHAT))
                stalled = asyncio.ensure_future(c.post("/chat/completions", json=CHAT))
                while len(fake.requests) < 2:
                    await asyncio.sleep(0.005)
                await fake.stop()
                for fut in (slow, stalled):
                    with pytest.raises(httpx.HTTPError):
                        await fut
            assert fake.disconnects == 0  # we hung up, not the client
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(scenario())


def test_thread_mode_stops_cleanly_and_frees_the_port():
    fake = FakeProvider().start_in_thread()
    port = fake.port
    assert httpx.get(f"{fake.base_url}/models").status_code == 200
    fake.stop_thread()
    assert not any(t.name.startswith("fake-provider") for t in threading.enumerate())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_a_raising_script_answers_500_naming_the_error(groq, client):
    def broken(req: ReceivedRequest) -> Reply:
        raise ValueError("bad script")

    groq.always(broken)
    r = client.post("/chat/completions", json=CHAT)
    assert r.status_code == 500
    assert "bad script" in r.json()["error"]["message"]


def test_received_request_json():
    assert ReceivedRequest("POST", "/", {}, b'{"a": 1}').json() == {"a": 1}


# -- the other two routes ----------------------------------------------------------


def test_embeddings_are_deterministic_unit_vectors_float_or_base64(groq, client):
    sdk = OpenAI(base_url=groq.base_url, api_key="k", max_retries=0)
    first = sdk.embeddings.create(model="embed-x", input=["hello", "world"])  # base64 on the wire
    again = sdk.embeddings.create(model="embed-x", input="hello", encoding_format="float")
    assert first.model == "embed-x" and [d.index for d in first.data] == [0, 1]
    assert first.data[0].embedding == pytest.approx(again.data[0].embedding, abs=1e-6)
    assert first.data[0].embedding != pytest.approx(first.data[1].embedding, abs=1e-3)
    assert sum(v * v for v in again.data[0].embedding) == pytest.approx(1.0, abs=1e-4)
    assert first.usage.prompt_tokens == first.usage.total_tokens >= 2
    sized = client.post("/embeddings", json={"input": [[1, 2, 3]], "dimensions": 5}).json()
    assert len(sized["data"][0]["embedding"]) == 5
    # Embeddings do not stream: a `stream` there still gets the list.
    streamed = client.post("/embeddings", json={"input": "hello", "stream": True})
    assert streamed.headers["content-type"].startswith("application/json")
    assert streamed.json()["data"][0]["embedding"] == pytest.approx(
        again.data[0].embedding, abs=1e-6
    )
    assert [r.path for r in groq.requests] == ["/v1/embeddings"] * 4


def test_legacy_completions_plain_and_streamed(groq):
    sdk = OpenAI(base_url=groq.base_url, api_key="k", max_retries=0)
    plain = sdk.completions.create(model="m", prompt="hi")
    assert (plain.object, plain.choices[0].text) == ("text_completion", "Hello from groq")
    chunks = list(sdk.completions.create(model="m", prompt="hi", stream=True))
    assert {c.object for c in chunks} == {"text_completion"}
    assert "".join(c.choices[0].text for c in chunks) == "Hello from groq"
    groq.script(Reply.rate_limited("7"))  # a script serves every route, in order
    with pytest.raises(Exception, match="429"):
        sdk.completions.create(model="m", prompt="hi")
