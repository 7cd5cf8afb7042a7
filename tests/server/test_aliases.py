"""Aliases: an app that hard-codes `model="gpt-4o-mini"` lands on the chain the config names,
and every answer, /v1/models and the request log say so; the admin API edits them."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from chain429.config.loader import load_config
from chain429.requestlog.database import migrate, open_database
from chain429.requestlog.writer import Telemetry
from chain429.server.app import create_app
from chain429.server.serving import ServerThread
from fixtures.servers import PROXY_KEY, provider_entry

HELLO = [{"role": "user", "content": "hi"}]


def aliased_config(cheap, smart) -> dict[str, Any]:
    return {
        "version": 1,
        "settings": {"apiKeys": [PROXY_KEY], "defaultChain": "smart"},
        "providers": [provider_entry("cheap", cheap), provider_entry("smart", smart)],
        "chains": [
            {"name": "fast", "entries": [{"provider": "cheap", "model": "small-1"}]},
            {
                "name": "smart",
                "entries": [
                    {"provider": "smart", "model": "big-1"},
                    # An entry model of the same name as an alias: the alias wins.
                    {"provider": "smart", "model": "gpt-4o-mini"},
                ],
            },
        ],
        "aliases": {"gpt-4o-mini": "fast", "claude-3-haiku": "fast", "openai/gpt-4o": "smart"},
    }


@pytest.fixture
def logged(fake, proxy, tmp_path):
    cheap, smart = fake("cheap"), fake("smart")
    database = open_database(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(database)
    p = proxy(aliased_config(cheap, smart), telemetry=Telemetry(database, batch_interval_s=0.01))
    return p, cheap, smart


def logged_row(p, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    with p.http() as http:
        while True:
            row = http.get(f"/v1/stats/requests/{request_id}")
            if row.status_code == 200 or time.monotonic() > deadline:
                return dict(row.json())
            time.sleep(0.05)


def test_a_hard_coded_model_name_lands_on_its_aliased_chain(logged):
    p, cheap, smart = logged
    reply = p.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO
    )
    completion = reply.parse()
    assert completion.choices[0].message.content == "Hello from cheap"
    assert reply.headers["x-429chain-chain"] == "fast"
    assert reply.headers["x-429chain-route"] == "alias"
    assert reply.headers["x-429chain-alias"] == "gpt-4o-mini"  # the name asked for
    assert reply.headers["x-429chain-provider"] == "cheap/small-1"
    # The provider is asked for its own model, never the alias.
    assert [r.json()["model"] for r in cheap.requests] == ["small-1"]
    assert smart.requests == []

    row = logged_row(p, reply.headers["x-request-id"])
    assert (row["requested_model"], row["chain"], row["route"]) == ("gpt-4o-mini", "fast", "alias")
    assert (row["provider"], row["model"]) == ("cheap", "small-1")


def test_an_alias_with_a_slash_and_a_stream(logged):
    p, cheap, smart = logged
    with p.openai().chat.completions.with_streaming_response.create(
        model="openai/gpt-4o", messages=HELLO, stream=True
    ) as response:
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
        headers = response.headers
    assert text == "Hello from smart"
    assert (headers["x-429chain-chain"], headers["x-429chain-route"]) == ("smart", "alias")
    assert headers["x-429chain-alias"] == "openai/gpt-4o"
    row = logged_row(p, headers["x-request-id"])
    logged_as = (row["requested_model"], row["chain"], row["route"])
    assert logged_as == ("openai/gpt-4o", "smart", "alias")


def test_only_an_alias_adds_the_alias_header_and_any_alias_name_can_be_sent(fake, proxy):
    config = aliased_config(fake("cheap"), fake("smart"))
    config["aliases"]["模型-ü"] = "fast"  # not ASCII: its header is still sent
    p = proxy(config)
    by_chain = p.openai().chat.completions.with_raw_response.create(model="fast", messages=HELLO)
    assert by_chain.headers["x-429chain-route"] == "chain"
    assert "x-429chain-alias" not in by_chain.headers
    with p.http() as http:
        reply = http.post("/v1/chat/completions", json={"model": "模型-ü", "messages": HELLO})
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-429chain-chain"] == "fast"
    sent = [value for name, value in reply.headers.raw if name.lower() == b"x-429chain-alias"]
    assert sent == ["模型-ü".encode()]  # the name asked for, in UTF-8


def test_models_lists_each_alias_with_its_chain(logged):
    p, cheap, smart = logged
    listed = [(m.id, m.kind, getattr(m, "chain", None)) for m in p.openai().models.list().data]
    assert listed == [
        ("fast", "chain", None),
        ("smart", "chain", None),
        ("gpt-4o-mini", "alias", "fast"),
        ("claude-3-haiku", "alias", "fast"),
        ("openai/gpt-4o", "alias", "smart"),
        ("small-1", "model", None),
        ("big-1", "model", None),
    ]  # `gpt-4o-mini` the entry model is hidden behind the alias of that name


def test_strict_models_still_take_aliases(fake, proxy):
    cheap, smart = fake("cheap"), fake("smart")
    config = aliased_config(cheap, smart)
    config["settings"]["strictModels"] = True
    p = proxy(config)
    reply = p.openai().chat.completions.with_raw_response.create(
        model="claude-3-haiku", messages=HELLO
    )
    assert reply.headers["x-429chain-route"] == "alias"
    with pytest.raises(openai.NotFoundError) as unknown:
        p.openai().chat.completions.create(model="gpt-5", messages=HELLO)
    assert "not a chain, an alias or an entry model" in unknown.value.message


ADMIN = {"authorization": "Bearer alias-admin"}

FILE = """\
version: 1
settings:
  apiKeys: [{proxy}]
  adminKeys: [alias-admin]
providers:
  - id: cheap
    type: generic-openai
    baseUrl: {url}
chains:
  - name: fast
    entries:
      - provider: cheap
        model: small-1
  - name: spare
    entries:
      - provider: cheap
        model: small-2
# Apps that hard-code a model.
aliases:
  # app X
  gpt-4o-mini: fast
"""


@pytest.fixture
def editable(fake, tmp_path):
    cheap = fake("cheap")
    path = tmp_path / "chain429.yaml"
    path.write_text(FILE.format(proxy=PROXY_KEY, url=cheap.base_url))
    server = ServerThread(create_app(load_config(path), config_path=path)).start()
    yield server, path
    server.stop()


def test_the_admin_api_points_adds_and_deletes_aliases_keeping_the_files_comments(editable):
    server, path = editable

    def send(method: str, route: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, server.url + route, json=body, headers=ADMIN, timeout=10)

    def route_of(model: str) -> tuple[str, str]:
        reply = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": model, "messages": HELLO},
            headers={"authorization": f"Bearer {PROXY_KEY}"},
            timeout=10,
        )
        return reply.headers["x-429chain-chain"], reply.headers["x-429chain-route"]

    moved = send("PUT", "/v1/admin/aliases/gpt-4o-mini", {"chain": "spare"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["result"] == "updated"
    assert route_of("gpt-4o-mini") == ("spare", "alias")
    added = send("PUT", "/v1/admin/aliases/anthropic%2Fclaude-3-haiku", {"chain": "fast"})
    assert added.json()["result"] == "created", added.text
    assert route_of("anthropic/claude-3-haiku") == ("fast", "alias")
    text = path.read_text()
    assert "# Apps that hard-code a model.\naliases:\n  # app X\n  gpt-4o-mini: spare\n" in text
    assert "anthropic/claude-3-haiku: fast" in text

    # A chain an alias names cannot go; the alias may.
    refused = send("DELETE", "/v1/admin/chains/spare")
    assert refused.status_code == 409
    assert "aliases name it: gpt-4o-mini" in refused.json()["error"]["message"]
    assert send("DELETE", "/v1/admin/aliases/gpt-4o-mini").json()["result"] == "deleted"
    assert "app X" not in path.read_text()  # its comment went with it
    assert send("DELETE", "/v1/admin/chains/spare").status_code == 200


@pytest.mark.parametrize(
    ("method", "route", "body", "status", "field"),
    [
        ("PUT", "/v1/admin/aliases/x", {"chain": "nope"}, 422, "aliases.x"),
        ("PUT", "/v1/admin/aliases/spare", {"chain": "fast"}, 422, "aliases.spare"),
        ("PUT", "/v1/admin/aliases/x", {"chain": ""}, 400, "chain"),
        ("PUT", "/v1/admin/aliases/x", {"chains": "fast"}, 400, "chains"),
        ("PUT", "/v1/admin/aliases/x", ["fast"], 400, None),
        ("DELETE", "/v1/admin/aliases/nope", None, 404, None),
    ],
)
def test_a_wrong_alias_edit_is_refused_and_nothing_is_written(
    editable, method, route, body, status, field
):
    server, path = editable
    before = path.read_text()
    answer = httpx.request(method, server.url + route, json=body, headers=ADMIN, timeout=10)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["param"] == field
    assert path.read_text() == before
