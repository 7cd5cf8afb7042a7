"""Pausing a provider or an entry on a running server (`POST /v1/admin/entries/pause|resume`):
what requests, streams, chain tests, /v1/ratelimits and /metrics see, and when a pause ends."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from chain429.config.loader import load_config
from chain429.fakes.provider import Reply
from chain429.server.app import create_app
from chain429.server.serving import ServerThread
from fixtures.servers import ADMIN, HELLO, PROXY

CONFIG = """\
version: 1
settings:
  apiKeys: [proxy-key]
  adminKeys: [admin-key]
  defaultChain: main
  queueMode: true
  queueMaxWaitMs: 60000
providers:
  - id: a
    type: generic-openai
    baseUrl: {a}
    apiKey: key-of-a
  - id: b
    type: generic-openai
    baseUrl: {b}
chains:
  - name: main
    entries:
      - provider: a
        model: model-a
      - provider: a
        model: vendor/model-a2:free
      - provider: b
        model: model-b
"""


class Served:
    def __init__(self, path: Path, server: ServerThread) -> None:
        self.path, self.server = path, server

    def send(self, route: str, body: dict | None = None, headers=ADMIN) -> httpx.Response:
        method = "GET" if body is None else "POST"
        url = self.server.url + route
        return httpx.request(method, url, headers=headers, json=body, timeout=10)

    def pause(self, **body: str) -> httpx.Response:
        return self.send("/v1/admin/entries/pause", body)

    def resume(self, **body: str) -> httpx.Response:
        return self.send("/v1/admin/entries/resume", body)

    def trace(self) -> str:
        answer = self.send("/v1/chat/completions", {"model": "main", "messages": HELLO}, PROXY)
        assert answer.status_code == 200, answer.text
        return answer.headers["x-429chain-trace"]

    def report(self) -> dict:
        return self.send("/v1/ratelimits", headers=PROXY).json()

    def states(self) -> dict[str, str]:
        return {f"{e['provider']}/{e['model']}": e["state"] for e in self.report()["entries"]}

    def reload_with(self, text: str) -> None:
        self.path.write_text(text)
        reloaded = self.send("/v1/admin/reload", {})
        assert reloaded.status_code == 200 and reloaded.json()["reloaded"], reloaded.text


@pytest.fixture
def served(fake, tmp_path):
    a, b = fake("a"), fake("b")
    path = tmp_path / "chain429.yaml"
    text = CONFIG.format(a=a.base_url, b=b.base_url)
    path.write_text(text)
    server = ServerThread(create_app(load_config(path), config_path=path)).start()
    yield Served(path, server), a, b, text
    server.stop()


def test_a_paused_entry_is_skipped_until_resumed(served):
    s, a, b, _ = served
    paused = s.pause(provider="a", model="model-a")
    assert paused.status_code == 200, paused.text
    body = paused.json()
    assert body["new"] is True
    assert body["paused"]["scope"] == "entry" and body["paused"]["by"] == "admin#1"
    assert (body["paused"]["provider"], body["paused"]["model"]) == ("a", "model-a")
    assert body["paused"]["since"].endswith("Z")

    trace = s.trace()
    assert trace == "a/model-a=skip:paused,a/vendor/model-a2:free=200"
    assert [r.json()["model"] for r in a.requests] == ["vendor/model-a2:free"]

    (entry,) = [e for e in s.report()["entries"] if e["model"] == "model-a"]
    assert entry["state"] == "paused" and entry["until"] is None
    assert entry["reason"] == "entry a/model-a paused by admin#1"
    assert entry["paused"] == body["paused"]
    assert s.report()["paused"] == [body["paused"]]
    assert s.report()["blocks"] == []  # a pause is not a cooldown

    # Asked twice: the first pause stands, and says so.
    again = s.pause(provider="a", model="model-a")
    assert again.json() == {"paused": body["paused"], "new": False}

    resumed = s.resume(provider="a", model="model-a")
    assert resumed.json() == {"resumed": 1, "provider_paused": False}
    assert s.trace() == "a/model-a=200"
    assert s.resume(provider="a", model="model-a").json()["resumed"] == 0


def test_a_paused_provider_skips_every_entry_and_its_resume_ends_its_entries_pauses(served):
    s, a, b, _ = served
    s.pause(provider="a", model="vendor/model-a2:free")
    assert s.pause(provider="a").json()["paused"]["scope"] == "provider"
    assert s.trace() == "a/model-a=skip:paused,a/vendor/model-a2:free=skip:paused,b/model-b=200"
    assert a.requests == []
    states = s.states()
    assert states["a/model-a"] == states["a/vendor/model-a2:free"] == "paused"
    assert states["b/model-b"] == "available"

    # Resuming one entry of a paused provider leaves it skipped, and says why.
    entry_only = s.resume(provider="a", model="vendor/model-a2:free")
    assert entry_only.json() == {"resumed": 1, "provider_paused": True}
    s.pause(provider="a", model="vendor/model-a2:free")
    assert s.resume(provider="a").json() == {"resumed": 2, "provider_paused": False}
    assert s.report()["paused"] == []
    assert s.trace() == "a/model-a=200"


def test_a_stream_skips_a_paused_entry(served):
    s, a, b, _ = served
    s.pause(provider="a")
    client = openai.OpenAI(base_url=f"{s.server.url}/v1", api_key="proxy-key", max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="main", messages=HELLO, stream=True
    ) as response:
        text = "".join(
            chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices
        )
        trace = response.headers["x-429chain-trace"]
    assert text == "Hello from b"
    assert trace == "a/model-a=skip:paused,a/vendor/model-a2:free=skip:paused,b/model-b=200"
    assert a.requests == []


def test_when_every_entry_is_paused_the_503_says_so_at_once_and_the_sdk_does_not_retry(served):
    s, a, b, _ = served
    s.pause(provider="a")
    s.pause(provider="b", model="model-b")
    sent: list[httpx.Request] = []
    client = openai.OpenAI(
        base_url=f"{s.server.url}/v1",
        api_key="proxy-key",
        max_retries=2,
        http_client=httpx.Client(event_hooks={"request": [sent.append]}),
    )
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="main", messages=HELLO)
    error = raised.value
    assert error.status_code == 503
    assert error.code == "all_providers_exhausted"  # not queued: nothing to wait for
    assert "Every entry of chain 'main' is paused" in error.message
    assert "a/model-a, a/vendor/model-a2:free, b/model-b" in error.message
    assert error.response.headers["x-429chain-trace"] == (
        "a/model-a=skip:paused,a/vendor/model-a2:free=skip:paused,b/model-b=skip:paused"
    )
    assert error.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in error.response.headers
    assert len(sent) == 1  # the SDK took the advice
    assert a.requests == [] and b.requests == []


def test_a_pause_is_not_a_failure_and_a_cooldown_under_it_is_kept(served):
    s, a, b, _ = served
    a.script(Reply.rate_limited(retry_after="300"))
    assert s.trace() == "a/model-a=429,a/vendor/model-a2:free=200"
    s.pause(provider="a", model="model-a")
    assert s.states()["a/model-a"] == "paused"
    for _ in range(3):
        s.trace()
    (block,) = s.report()["blocks"]  # only the 429's cooldown, unchanged by the skips
    assert block["key"] == "bucket:a/model-a"
    # `limits clear` ends the cooldown, not the pause.
    assert s.send("/v1/admin/limits/clear", {"provider": "a", "model": "model-a"}).json() == {
        "cleared": 1
    }
    assert s.states()["a/model-a"] == "paused"
    s.resume(provider="a", model="model-a")
    assert s.states()["a/model-a"] == "available"
    (entry,) = [e for e in s.report()["entries"] if e["model"] == "model-a"]
    assert entry["breaker"]["failures"] == 0


def test_a_chain_test_does_not_call_a_paused_entry(served):
    s, a, b, _ = served
    s.pause(provider="a", model="model-a")
    body = s.send("/v1/test/chain/main", {}).json()
    results = {e["model"]: e for e in body["entries"]}
    assert results["model-a"]["result"] == "skip:paused"
    assert results["model-a"]["reason"] == "entry a/model-a paused by admin#1"
    assert results["model-b"]["result"] == "ok"
    assert body["working"] == 2
    assert [r.json()["model"] for r in a.requests] == ["vendor/model-a2:free"]


def test_metrics_count_the_pauses_in_force(served):
    s, a, b, _ = served
    s.pause(provider="a")
    s.pause(provider="b", model="model-b")
    text = s.send("/metrics").text
    assert "chain429_paused 2.0" in text
    s.resume(provider="b")
    assert "chain429_paused 1.0" in s.send("/metrics").text


def test_a_pause_outlives_a_new_key_and_ends_when_the_config_drops_what_it_names(served):
    s, a, b, text = served
    s.pause(provider="a")
    s.pause(provider="b", model="model-b")
    s.reload_with(text.replace("apiKey: key-of-a", "apiKey: a-new-key"))
    assert set(s.states().values()) == {"paused"}

    # The entry leaves its chain: its pause ends. Put back, it is asked again.
    without_b = text.replace("      - provider: b\n        model: model-b\n", "")
    s.reload_with(without_b.replace("apiKey: key-of-a", "apiKey: a-new-key"))
    assert [(p["provider"], p["model"]) for p in s.report()["paused"]] == [("a", None)]
    s.reload_with(text)
    assert s.states()["b/model-b"] == "available"

    # The provider leaves the config, and comes back: unpaused.
    chains_of_b = text.split("chains:")[0].replace(
        f"  - id: a\n    type: generic-openai\n    baseUrl: {a.base_url}\n    apiKey: key-of-a\n",
        "",
    )
    s.reload_with(
        chains_of_b + "chains:\n  - name: main\n    entries:\n      - provider: b\n"
        "        model: model-b\n"
    )
    assert s.report()["paused"] == []
    s.reload_with(text)
    assert s.trace() == "a/model-a=200"


@pytest.mark.parametrize("route", ["pause", "resume"])
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
def test_a_wrong_pause_request_is_a_4xx_naming_the_field(served, route, body, status, param):
    s, a, b, _ = served
    answer = s.send(f"/v1/admin/entries/{route}", body)
    assert answer.status_code == status
    assert answer.json()["error"]["param"] == param
    assert s.report()["paused"] == []


def test_only_an_admin_key_may_pause_or_resume(served):
    s, a, b, _ = served
    for route in ("pause", "resume"):
        denied = s.send(f"/v1/admin/entries/{route}", {"provider": "a"}, PROXY)
        assert denied.status_code == 403
        assert denied.json()["error"]["code"] == "insufficient_permissions"
        text = httpx.post(
            f"{s.server.url}/v1/admin/entries/{route}",
            headers={**ADMIN, "content-type": "text/plain"},
            content=b'{"provider": "a"}',
        )
        assert text.status_code == 415
    assert s.report()["paused"] == []
