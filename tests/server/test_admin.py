"""The admin API and config-as-code: edits, validation, reloads, chain tests."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from chain429.config.loader import load_config
from chain429.fakes.provider import Reply
from chain429.server.app import create_app
from chain429.server.serving import ServerThread
from fixtures.servers import ADMIN, HELLO, PROXY

YAML_ADMIN = {**ADMIN, "content-type": "application/yaml"}

CONFIG = """\
# chain429 test config: this comment must survive every edit
version: 1

settings:
  apiKeys: [proxy-key]
  adminKeys: [admin-key]
  defaultChain: main   # the fallback chain

providers:
  # the first provider
  - id: a
    type: generic-openai
    baseUrl: {a}
    apiKey: ${{A_KEY}}

  - id: b
    type: generic-openai
    baseUrl: {b}
    apiKey: sk-literal-secret-9876

chains:
  - name: main
    entries:
      - provider: a
        model: model-a
      - provider: b
        model: model-b
"""


class Served:
    def __init__(self, path: Path, server: ServerThread) -> None:
        self.path, self.server = path, server

    @property
    def url(self) -> str:
        return self.server.url

    def get(self, route, headers=ADMIN, **kwargs):
        return httpx.get(self.url + route, headers=headers, timeout=10, **kwargs)

    def send(self, method, route, headers=ADMIN, **kwargs):
        return httpx.request(method, self.url + route, headers=headers, timeout=10, **kwargs)

    def chat(self, model="main"):
        return httpx.post(
            self.url + "/v1/chat/completions",
            headers=PROXY,
            timeout=10,
            json={"model": model, "messages": HELLO},
        )


@pytest.fixture
def served(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("A_KEY", "a-secret-from-env")
    a, b = fake("a"), fake("b")
    path = tmp_path / "chain429.yaml"
    path.write_text(CONFIG.format(a=a.base_url, b=b.base_url))
    server = ServerThread(create_app(load_config(path), config_path=path)).start()
    yield Served(path, server), a, b
    server.stop()


def test_admin_routes_need_an_admin_key(served):
    s, a, b = served
    assert s.get("/v1/admin/status", headers={}).status_code == 401
    forbidden = s.get("/v1/admin/status", headers=PROXY)
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["type"] == "permission_error"
    assert s.get("/v1/admin/status").status_code == 200


def test_config_is_shown_with_secrets_masked_and_an_etag(served):
    s, a, b = served
    response = s.get("/v1/admin/config")
    assert response.headers["etag"] == '"1"'
    providers = response.json()["config"]["providers"]
    assert providers[0]["apiKey"] == "${A_KEY}"
    assert providers[1]["apiKey"] == "sk-…9876"
    assert "literal-secret" not in response.text and "a-secret-from-env" not in response.text


def test_put_provider_writes_the_file_keeps_comments_and_applies_at_once(served, fake):
    s, a, b = served
    c = fake("c")
    before = s.path.read_text()
    created = s.send(
        "PUT",
        "/v1/admin/providers/c",
        json={"type": "generic-openai", "baseUrl": c.base_url, "apiKey": "${A_KEY}"},
    )
    assert created.status_code == 200, created.text
    assert created.headers["etag"] == '"2"'
    text = s.path.read_text()
    assert "# chain429 test config: this comment must survive every edit" in text
    assert "# the first provider" in text and "# the fallback chain" in text
    assert "${A_KEY}" in text and "a-secret-from-env" not in text
    assert text.startswith(before.split("chains:")[0].split("  - id: b")[0])
    chain = s.send(
        "PUT", "/v1/admin/chains/via-c", json={"entries": [{"provider": "c", "model": "model-c"}]}
    )
    assert chain.status_code == 200
    answer = s.chat("via-c")
    assert answer.headers["x-429chain-provider"] == "c/model-c"
    assert c.requests[0].headers["authorization"] == "Bearer a-secret-from-env"


def test_put_without_or_with_masked_api_key_keeps_the_existing_key(served):
    s, a, b = served
    for body in (
        {"type": "generic-openai", "baseUrl": b.base_url, "timeout": 9000},
        {"type": "generic-openai", "baseUrl": b.base_url, "apiKey": "sk-…9876"},
    ):
        assert s.send("PUT", "/v1/admin/providers/b", json=body).status_code == 200
        assert "sk-literal-secret-9876" in s.path.read_text()
    a.always(Reply.rate_limited("60"))
    s.chat()
    assert b.requests[-1].headers["authorization"] == "Bearer sk-literal-secret-9876"


def test_invalid_edit_is_422_and_changes_nothing(served):
    s, a, b = served
    before = s.path.read_text()
    bad = s.send(
        "PUT", "/v1/admin/chains/broken", json={"entries": [{"provider": "nope", "model": "m"}]}
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["path"].startswith("chains[")
    assert s.path.read_text() == before
    assert s.get("/v1/admin/status").json()["generation"] == 1


def test_deleting_a_provider_in_use_is_409_naming_the_chains(served):
    s, a, b = served
    conflict = s.send("DELETE", "/v1/admin/providers/a")
    assert conflict.status_code == 409
    assert "main" in conflict.json()["error"]["message"]
    assert s.send("DELETE", "/v1/admin/providers/zzz").status_code == 404


def test_a_stale_if_match_is_412(served):
    s, a, b = served
    assert (
        s.send(
            "PATCH",
            "/v1/admin/settings",
            json={"cooldownDefaultMs": 1000},
            headers={**ADMIN, "if-match": '"1"'},
        ).status_code
        == 200
    )
    stale = s.send(
        "PATCH",
        "/v1/admin/settings",
        json={"cooldownDefaultMs": 2000},
        headers={**ADMIN, "if-match": '"1"'},
    )
    assert stale.status_code == 412
    assert stale.headers["etag"] == '"2"'
    assert "cooldownDefaultMs: 1000" in s.path.read_text()


def test_validate_checks_a_body_and_applies_nothing(served):
    s, a, b = served
    ok = s.send("POST", "/v1/admin/validate", headers=YAML_ADMIN, content=s.path.read_text())
    assert ok.status_code == 200 and ok.json() == {"valid": True}
    bad = s.send(
        "POST",
        "/v1/admin/validate",
        headers=YAML_ADMIN,
        content="version: 1\nsettings:\n  port: nope\n",
    )
    assert bad.status_code == 422
    error = bad.json()["errors"][0]
    assert (error["path"], error["line"]) == ("settings.port", 3)
    assert s.get("/v1/admin/status").json()["generation"] == 1


def replace_file(path: Path, text: str) -> None:
    """Save the way editors do: a new file renamed over the old one."""
    temporary = path.with_suffix(".swp")
    temporary.write_text(text)
    os.replace(temporary, path)


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_the_server_follows_edits_to_its_file(served):
    s, a, b = served
    replace_file(s.path, s.path.read_text().replace("model: model-a", "model: model-a2"))
    assert wait_for(lambda: s.get("/health").json()["config_generation"] == 2)
    assert s.chat().headers["x-429chain-provider"] == "a/model-a2"


def test_an_invalid_file_never_replaces_the_running_config(served):
    s, a, b = served
    replace_file(s.path, s.path.read_text().replace("provider: b", "provider: ghost"))
    assert wait_for(lambda: s.get("/health").json()["config_error"] is not None)
    health = s.get("/health").json()
    assert health["config_generation"] == 1
    assert health["config_error"]["errors"][0]["path"] == "chains[0].entries[1].provider"
    # Anyone may ask /health: they learn that the file was rejected and when, not why.
    public = s.get("/health", headers={}).json()["config_error"]
    assert public["rejected_at"] == health["config_error"]["rejected_at"] > 0
    assert "errors" not in public
    assert "errors" not in s.get("/health", headers=PROXY).json()["config_error"]
    status = s.get("/v1/admin/status").json()
    assert status["last_error"][0]["line"] is not None
    assert s.chat().status_code == 200
    reload = s.send("POST", "/v1/admin/reload")
    assert reload.status_code == 422


def test_rate_limit_state_survives_a_reload_unless_the_provider_changes(served):
    s, a, b = served
    a.always(Reply.rate_limited("60"))
    s.chat()
    assert s.chat().headers["x-429chain-trace"].startswith("a/model-a=skip:cooldown")
    replace_file(
        s.path,
        s.path.read_text().replace(
            "defaultChain: main", "defaultChain: main\n  cooldownDefaultMs: 5000"
        ),
    )
    assert wait_for(lambda: s.get("/health").json()["config_generation"] == 2)
    assert s.chat().headers["x-429chain-trace"].startswith("a/model-a=skip:cooldown")
    a.always(Reply())
    replace_file(s.path, s.path.read_text().replace("${A_KEY}", "another-key"))
    assert wait_for(lambda: s.get("/health").json()["config_generation"] == 3)
    assert s.chat().headers["x-429chain-trace"] == "a/model-a=200"


def test_fifty_reloads_under_load_fail_no_request(served):
    s, a, b = served
    failures, done = [], threading.Event()

    def load():
        with httpx.Client(base_url=s.url, headers=PROXY, timeout=10) as http:
            while not done.is_set():
                response = http.post(
                    "/v1/chat/completions", json={"model": "main", "messages": HELLO}
                )
                if response.status_code != 200:
                    failures.append(response.status_code)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for n in range(50):
            timeout = 9000 + n
            assert (
                s.send(
                    "PATCH", "/v1/admin/settings", json={"requestTimeoutMs": timeout}
                ).status_code
                == 200
            )
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=10)
    assert failures == []
    assert s.get("/v1/admin/status").json()["generation"] == 51


def test_chain_test_asks_every_entry_and_learns(served):
    s, a, b = served
    b.always(Reply.rate_limited("120"))
    result = s.send("POST", "/v1/test/chain/main").json()
    by_provider = {e["provider"]: e for e in result["entries"]}
    assert by_provider["a"]["result"] == "ok"
    assert by_provider["a"]["status"] == 200
    assert by_provider["a"]["model_reported"] == "model-a"
    assert by_provider["a"]["latency_ms"] > 0
    assert by_provider["b"]["result"] == "429"
    assert a.requests[0].json()["max_tokens"] <= 16
    limits = s.get("/v1/ratelimits", headers=PROXY).json()
    assert {e["provider"]: e["state"] for e in limits["entries"]}["b"] == "cooling"
    streamed = s.send("POST", "/v1/test/chain/main?stream=true").json()
    assert streamed["stream"] is True
    a.always(Reply.stream("OK"))
    streamed = s.send("POST", "/v1/test/chain/main?stream=true").json()
    assert {e["provider"]: e["result"] for e in streamed["entries"]}["a"] == "ok"


def test_diff_says_what_a_file_would_change(served):
    s, a, b = served
    same = s.send("POST", "/v1/admin/diff", headers=YAML_ADMIN, content=s.path.read_text()).json()
    assert same["same"] is True and same["unified"] == ""
    entry_a = "      - provider: a\n        model: model-a\n"
    entry_b = "      - provider: b\n        model: model-b\n"
    edited = (
        s.path.read_text()
        .replace(entry_a + entry_b, entry_b + entry_a)
        .replace("apiKey: sk-literal-secret-9876", "apiKey: sk-literal-secret-1111")
    )
    changed = s.send("POST", "/v1/admin/diff", headers=YAML_ADMIN, content=edited).json()
    assert changed["same"] is False
    assert any("moved" in line for line in changed["summary"])
    assert any("apiKey" in line for line in changed["summary"])
    assert "literal-secret" not in str(changed)
    invalid = s.send("POST", "/v1/admin/diff", headers=YAML_ADMIN, content="version: 2\n")
    assert invalid.status_code == 422


def test_config_of_a_server_without_a_file_is_masked_too(fake, proxy):
    from fixtures.servers import PROXY_KEY, chain_config, provider_entry

    a = fake("a")
    extra = {"headers": {"Authorization": "Bearer sk-header-secret-1234", "X-Title": "t"}}
    config = chain_config([provider_entry("a", a, **extra)], [("a", "m")])
    config["providers"][0]["apiKey"] = "sk-provider-secret-5678"
    p = proxy(config)
    response = httpx.get(
        f"{p.url}/v1/admin/config", headers={"authorization": f"Bearer {PROXY_KEY}"}
    )
    assert response.status_code == 200
    data = response.json()
    assert data["path"] is None
    (provider,) = data["config"]["providers"]
    assert provider["apiKey"] == "sk-…5678"
    assert provider["headers"] == {"Authorization": "Bea…1234", "X-Title": "t"}
    assert "secret" not in response.text and PROXY_KEY not in response.text
