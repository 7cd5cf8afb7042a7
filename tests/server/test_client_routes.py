"""`/v1/admin/clients`: clients read and edited through the admin API, on a real config file.

Edits go through the round-trip writer (comments kept), keys are named as
`${VAR}` and never shown, and what a client may do changes with the config:
a client added over the API can call the proxy at once, a deleted one cannot.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from chain429.config.loader import load_config
from chain429.server.app import create_app
from chain429.server.serving import ServerThread

ADMIN = {"authorization": "Bearer admin-key-0123456"}
ANA_KEY = "ana-key-0123456789abcdef"
BEN_KEY = "ben-key-0123456789abcdef"
HELLO = [{"role": "user", "content": "hi"}]

CONFIG = """\
# clients over the API: this comment must survive every edit
version: 1
settings:
  adminKeys: [admin-key-0123456]
  defaultChain: main
providers:
  - id: a
    type: generic-openai
    baseUrl: {a}
chains:
  - name: main
    entries:
      - provider: a
        model: model-a
  - name: spare
    entries:
      - provider: a
        model: model-b
clients:
  # the first team member
  - name: ana
    key: ${{CHAIN429_CLIENT_ANA_KEY}}
    requestsPerMinute: 5
"""


class Served:
    def __init__(self, path: Path, server: ServerThread) -> None:
        self.path, self.server = path, server

    def send(self, method: str, route: str, headers=ADMIN, **kwargs) -> httpx.Response:
        return httpx.request(method, self.server.url + route, headers=headers, timeout=10, **kwargs)

    def chat(self, key: str, model: str = "main") -> httpx.Response:
        return self.send(
            "POST",
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": model, "messages": HELLO},
        )


@pytest.fixture
def served(fake, tmp_path):
    a = fake("a")
    path = tmp_path / "chain429.yaml"
    path.write_text(CONFIG.format(a=a.base_url))
    (tmp_path / ".env").write_text(
        f"CHAIN429_CLIENT_ANA_KEY={ANA_KEY}\nCHAIN429_CLIENT_BEN_KEY={BEN_KEY}\n"
    )
    server = ServerThread(create_app(load_config(path), config_path=path)).start()
    yield Served(path, server)
    server.stop()


def test_clients_are_listed_with_their_usage_and_no_key(served):
    assert served.chat(ANA_KEY).status_code == 200
    listed = served.send("GET", "/v1/admin/clients")
    assert listed.status_code == 200 and ANA_KEY not in listed.text
    (ana,) = listed.json()["data"]
    assert ana["name"] == "ana" and ana["key"] == "${CHAIN429_CLIENT_ANA_KEY}"
    assert ana["usage"][0]["kind"] == "requests" and ana["usage"][0]["window"] == "minute"
    assert (ana["usage"][0]["limit"], ana["usage"][0]["remaining"]) == (5, 4)
    assert ana["usage"][0]["reset_at"].endswith("Z")
    one = served.send("GET", "/v1/admin/clients/ana").json()
    assert one == ana
    missing = served.send("GET", "/v1/admin/clients/nobody")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    config = served.send("GET", "/v1/admin/config").json()["config"]
    assert config["clients"][0]["key"] == "${CHAIN429_CLIENT_ANA_KEY}"


def test_a_client_added_over_the_api_can_call_at_once_and_is_gone_once_deleted(served):
    assert served.chat(BEN_KEY).status_code == 401
    body = {"key": "${CHAIN429_CLIENT_BEN_KEY}", "chains": ["spare"], "requestsPerDay": 100}
    added = served.send("PUT", "/v1/admin/clients/ben", json=body)
    assert added.status_code == 200, added.text
    assert added.json()["result"] == "created"
    text = served.path.read_text()
    assert "# clients over the API: this comment must survive every edit" in text
    assert "# the first team member" in text and "${CHAIN429_CLIENT_BEN_KEY}" in text
    assert BEN_KEY not in text
    assert "- name: ben\n" in text  # written as a person would: the name first

    answer = served.chat(BEN_KEY, "spare")
    assert answer.status_code == 200 and answer.headers["x-429chain-client"] == "ben"
    assert served.chat(BEN_KEY, "main").status_code == 403

    # A replace without the key keeps it; the limits are what the body says.
    changed = served.send("PUT", "/v1/admin/clients/ben", json={"requestsPerMinute": 1})
    assert changed.json()["result"] == "updated"
    ben = served.send("GET", "/v1/admin/clients/ben").json()
    assert ben["key"] == "${CHAIN429_CLIENT_BEN_KEY}" and "chains" not in ben
    assert served.chat(BEN_KEY, "main").status_code == 200
    assert served.chat(BEN_KEY, "main").status_code == 429

    deleted = served.send("DELETE", "/v1/admin/clients/ben")
    assert deleted.status_code == 200 and deleted.json()["result"] == "deleted"
    assert "name: ben" not in served.path.read_text()
    assert served.chat(BEN_KEY).status_code == 401
    gone = served.send("DELETE", "/v1/admin/clients/ben")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    # Deleting and reading an unknown client say the same, and name those there are.
    unknown = served.send("GET", "/v1/admin/clients/ben").json()["error"]["message"]
    assert gone.json()["error"]["message"] == unknown == "no client named 'ben' (clients: ana)"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"key": "a-literal-key-0123456789"}, "write the key as a ${VAR} reference"),
        ({"key": "${CHAIN429_CLIENT_ANA_KEY}"}, "the same key as clients[0].key"),
        ({"key": "${CHAIN429_CLIENT_NOPE_KEY}"}, "CHAIN429_CLIENT_NOPE_KEY is not set"),
        ({"key": "${HOME}"}, "may not be referenced here"),
        ({"key": "${CHAIN429_CLIENT_BEN_KEY}", "chains": ["nope"]}, "no chain named 'nope'"),
        ({"chains": ["main"]}, "missing required key 'key'"),
    ],
)
def test_a_bad_client_is_refused_and_nothing_is_written(served, body, fragment):
    before = served.path.read_text()
    refused = served.send("PUT", "/v1/admin/clients/ben", json=body)
    assert refused.status_code in (400, 422), refused.text
    assert fragment in refused.text
    assert ANA_KEY not in refused.text and BEN_KEY not in refused.text
    assert served.path.read_text() == before


def test_client_keys_may_not_use_the_client_routes(served):
    as_ana = {"authorization": f"Bearer {ANA_KEY}"}
    assert served.send("GET", "/v1/admin/clients", headers=as_ana).status_code == 403
    put = served.send(
        "PUT", "/v1/admin/clients/ana", headers=as_ana, json={"requestsPerMinute": 1000}
    )
    assert put.status_code == 403
    assert served.send("GET", "/v1/admin/clients", headers={}).status_code == 401


def test_a_key_changed_in_env_is_in_force_within_a_second_without_a_reload_call(served):
    import time

    assert served.chat(ANA_KEY).status_code == 200
    new_key = "ana-new-key-0123456789abcdef"
    dotenv = served.path.parent / ".env"
    dotenv.write_text(dotenv.read_text().replace(ANA_KEY, new_key))
    deadline = time.monotonic() + 5
    while served.chat(new_key).status_code != 200:
        assert time.monotonic() < deadline, "the server never read the new .env"
        time.sleep(0.1)
    assert served.chat(ANA_KEY).status_code == 401


def test_the_last_client_of_a_public_server_cannot_be_deleted(served):
    """With no apiKeys, the clients' keys are what keeps a server on a public address closed:
    deleting the last one over the API is refused, and nothing is written."""
    served.server.app.ctx.bind_host = "10.20.30.40"  # deployed there; the test binds 127.0.0.1
    before = served.path.read_text()
    refused = served.send("DELETE", "/v1/admin/clients/ana")
    assert refused.status_code == 422, refused.text
    assert "10.20.30.40 without settings.apiKeys or clients" in refused.json()["error"]["message"]
    assert served.path.read_text() == before
    assert served.chat(ANA_KEY).status_code == 200
    anonymous = served.send(
        "POST", "/v1/chat/completions", headers={}, json={"model": "main", "messages": HELLO}
    )
    assert anonymous.status_code == 401  # still closed to callers without a key
