"""Steering a running server over the admin API (what the web UI and `chain429 limits` use):
who may edit, clearing a cooldown, the file against the running config, live tests."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from chain429.config.loader import load_config
from chain429.fakes.provider import Reply
from chain429.server.app import create_app
from chain429.server.serving import ServerThread
from fixtures.servers import ADMIN, HELLO, PROXY

CONFIG = """\
# steering test config
version: 1
settings:
  apiKeys: [proxy-key]
  adminKeys: [admin-key]
  defaultChain: main
providers:
  - id: a
    type: generic-openai
    baseUrl: {a}
    apiKey: sk-literal-secret-4321
  - id: b
    type: generic-openai
    baseUrl: {b}
    apiKey: ${{B_KEY}}
chains:
  - name: main
    entries:
      - provider: a
        model: model-a
      - provider: b
        model: model-b
  - name: other
    entries:
      - provider: b
        model: model-b
      - provider: b
        model: model-c
"""


class Served:
    def __init__(self, path: Path, server: ServerThread) -> None:
        self.path, self.server = path, server

    def send(self, method: str, route: str, headers=ADMIN, **kwargs) -> httpx.Response:
        return httpx.request(method, self.server.url + route, headers=headers, timeout=10, **kwargs)

    def chat(self) -> httpx.Response:
        return self.send(
            "POST", "/v1/chat/completions", PROXY, json={"model": "main", "messages": HELLO}
        )

    def states(self) -> dict[str, str]:
        entries = self.send("GET", "/v1/ratelimits", PROXY).json()["entries"]
        return {
            f"{e['provider']}/{e['model']}": e["state"] for e in entries if e["chain"] == "main"
        }


@pytest.fixture
def served(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("B_KEY", "b-secret-from-env")
    a, b = fake("a"), fake("b")
    path = tmp_path / "chain429.yaml"
    path.write_text(CONFIG.format(a=a.base_url, b=b.base_url))
    server = ServerThread(create_app(load_config(path), config_path=path)).start()
    yield Served(path, server), a, b
    server.stop()


def test_status_says_what_the_callers_key_may_do(served, fake, proxy):
    s, a, b = served
    assert s.send("GET", "/v1/admin/status").json()["access"] == {"label": "admin#1", "write": True}
    # A proxy key reads the admin API only while no adminKeys are set: then it may not edit.
    c = fake("c")
    reader = proxy(
        {
            "settings": {"apiKeys": ["k"]},
            "providers": [{"id": "c", "type": "generic-openai", "baseUrl": c.base_url}],
            "chains": [{"name": "x", "entries": [{"provider": "c", "model": "m"}]}],
        }
    )
    answer = httpx.get(f"{reader.url}/v1/admin/status", headers={"authorization": "Bearer k"})
    assert answer.json()["access"] == {"label": "key#1", "write": False}
    keyless = proxy({"chains": [], "providers": []})
    assert httpx.get(f"{keyless.url}/v1/admin/status").json()["access"] == {
        "label": "open",
        "write": True,
    }


def test_clearing_an_entry_ends_its_cooldown_and_the_next_request_asks_it(served):
    s, a, b = served
    a.script(Reply.rate_limited(retry_after="300"))
    assert s.chat().headers["x-429chain-trace"] == "a/model-a=429,b/model-b=200"
    assert s.states()["a/model-a"] == "cooling"
    assert s.chat().headers["x-429chain-trace"] == "a/model-a=skip:cooldown,b/model-b=200"

    denied = s.send("POST", "/v1/admin/limits/clear", PROXY, json={"provider": "a"})
    assert denied.status_code == 403
    cleared = s.send("POST", "/v1/admin/limits/clear", json={"provider": "a", "model": "model-a"})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json() == {"cleared": 1}
    assert s.states()["a/model-a"] == "available"
    assert s.chat().headers["x-429chain-trace"] == "a/model-a=200"
    again = s.send("POST", "/v1/admin/limits/clear", json={"provider": "a", "model": "model-a"})
    assert again.json() == {"cleared": 0}


def test_clearing_a_provider_ends_its_provider_wide_block(served):
    s, a, b = served
    a.script(Reply.error(401, "bad key"))  # a bad key: the whole provider is unhealthy
    assert s.chat().headers["x-429chain-trace"] == "a/model-a=401,b/model-b=200"
    assert s.states()["a/model-a"] == "unhealthy"
    cleared = s.send("POST", "/v1/admin/limits/clear", json={"provider": "a"})
    assert cleared.json() == {"cleared": 1}
    assert s.states()["a/model-a"] == "available"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"provider": "nope"}, 404, "provider"),
        ({"provider": "a", "model": "model-b"}, 404, "model"),
        ({"provider": ""}, 400, "provider"),
        ({"model": "model-a"}, 400, "provider"),
        ({"provider": "a", "model": 7}, 400, "model"),
        ({"provider": "a", "scope": "all"}, 400, "scope"),
    ],
)
def test_a_wrong_clear_request_is_a_4xx_naming_the_field(served, body, status, param):
    s, a, b = served
    answer = s.send("POST", "/v1/admin/limits/clear", json=body)
    assert answer.status_code == status
    assert answer.json()["error"]["param"] == param


def test_clear_takes_json_only(served):
    s, a, b = served
    answer = s.send(
        "POST",
        "/v1/admin/limits/clear",
        {**ADMIN, "content-type": "text/plain"},
        content=b'{"provider": "a"}',
    )
    assert answer.status_code == 415


def test_the_file_against_the_running_config(served):
    s, a, b = served
    same = s.send("GET", "/v1/admin/diff")
    assert same.status_code == 200
    # A literal key in the file is compared as it is, not as the masked text a client sees.
    assert same.json()["same"] is True and same.json()["summary"] == []
    s.path.write_text(s.path.read_text().replace("version: 1", "version: 1\nsettings: [oops]"))
    broken = s.send("GET", "/v1/admin/diff")
    assert broken.status_code == 422
    assert broken.json()["valid"] is False and broken.json()["errors"][0]["line"]
    assert s.send("GET", "/v1/admin/diff", PROXY).status_code == 403


def test_a_provider_test_asks_each_model_it_serves_once(served):
    s, a, b = served
    answer = s.send("POST", "/v1/test/provider/b")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["provider"] == "b" and body["working"] == 2
    assert [e["model"] for e in body["entries"]] == ["model-b", "model-c"]
    assert body["entries"][0]["text"] == "Hello from b"
    assert len(b.requests) == 2
    assert s.send("POST", "/v1/test/provider/zzz").status_code == 404
    assert s.send("POST", "/v1/test/provider/b", PROXY).status_code == 403


def test_a_chain_test_streams_each_entrys_text_live(served):
    s, a, b = served
    a.always(Reply.stream("one two three", chunk_delay=0.15))
    b.always(Reply.stream("four", chunk_delay=0.02))
    seen: list[tuple[float, dict]] = []
    headers = {**ADMIN, "accept": "text/event-stream"}
    with httpx.stream(
        "POST", s.server.url + "/v1/test/chain/main?stream=true", headers=headers, timeout=10
    ) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if line.startswith("data: "):
                seen.append((time.monotonic(), json.loads(line[6:])))
    kinds = [event["type"] for _, event in seen]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert [e["model"] for e in seen[0][1]["entries"]] == ["model-a", "model-b"]
    deltas = [(t, e) for t, e in seen if e["type"] == "delta"]
    assert "".join(e["text"] for _, e in deltas if e["index"] == 0) == "one two three"
    assert "".join(e["text"] for _, e in deltas if e["index"] == 1) == "four"
    # Live: b's result came while a was still streaming, a's first words well before the end.
    results = {e["index"]: t for t, e in seen if e["type"] == "result"}
    assert results[1] < results[0]
    assert seen[-1][0] - deltas[0][0] > 0.2
    done = seen[-1][1]
    assert done["working"] == 2 and done["entries"][0]["text"] == "one two three"


def test_a_chain_test_without_events_answers_json_with_each_text(served):
    s, a, b = served
    body = s.send("POST", "/v1/test/chain/main").json()
    assert [e["text"] for e in body["entries"]] == ["Hello from a", "Hello from b"]
