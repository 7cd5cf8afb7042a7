"""Chains of `kind: embeddings` from the CLI: added, shown, changed, picked in the wizard,
and the stats split by endpoint."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import openai
import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from chain429.cli import wizard
from chain429.config.loader import load_config
from chain429.requestlog.database import migrate, open_database
from chain429.requestlog.writer import Telemetry
from fixtures.cli_edits import assert_comments_kept, cli, commented
from fixtures.servers import PROXY_KEY, chain_config, provider_entry

DOWN, ENTER = "\x1b[B", "\r"
ENV = {"GROQ_API_KEY": "gsk-test"}

WITH_EMBEDDERS = """\
version: 1
providers:
  - id: mist
    type: mistral
    apiKey: ${MISTRAL_API_KEY}
  - id: oai
    type: openai
    apiKey: ${OPENAI_API_KEY}
chains:
  - name: main
    entries:
      - provider: mist
        model: mistral-small-latest
"""


@contextmanager
def keystrokes(*keys: str) -> Iterator[None]:
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        pipe.send_text("".join(keys))
        yield


def rows(stdout: str) -> list[list[str]]:
    return [line.split("\t") for line in stdout.splitlines() if line]


def test_chain_add_kind_embeddings_writes_it_and_list_show_say_so(tmp_path):
    path = commented(tmp_path)
    added = cli(
        "chain", "add", "embed", "--kind", "embeddings", "-e", "local:nomic", "-c", str(path)
    )
    assert added.exit_code == 0, added.output
    assert "added embeddings chain 'embed'" in added.stderr
    assert_comments_kept(path)
    assert "  - name: embed\n    kind: embeddings\n    entries:" in path.read_text()
    config = load_config(path, environ=ENV)
    assert [(c.name, c.kind) for c in config.chains] == [("main", "chat"), ("embed", "embeddings")]

    listed = rows(cli("chain", "list", "-c", str(path)).stdout)
    assert listed[0][:2] == ["NAME", "KIND"]
    assert {row[0]: row[1] for row in listed[1:]} == {"main": "chat", "embed": "embeddings"}
    shown = json.loads(cli("chain", "show", "embed", "-c", str(path), "--json").stdout)
    assert shown["kind"] == "embeddings"
    assert json.loads(cli("chain", "show", "main", "-c", str(path), "--json").stdout)["kind"] == (
        "chat"
    )


def test_a_chat_chain_is_written_without_a_kind(tmp_path):
    path = commented(tmp_path)
    assert cli("chain", "add", "plain", "-e", "groq:x", "-c", str(path)).exit_code == 0
    assert "kind" not in path.read_text()  # as 429chain writes it


def test_without_a_terminal_the_error_offers_the_known_embedding_models(tmp_path):
    path = tmp_path / "chain429.yaml"
    path.write_text(WITH_EMBEDDERS)
    result = cli("chain", "add", "embed", "--kind", "embeddings", "-c", str(path))
    assert result.exit_code == 2
    assert "mist:mistral-embed" in result.stderr
    assert "oai:text-embedding-3-small" in result.stderr
    assert result.stderr.count("\n") == 1
    bad = cli("chain", "add", "x", "--kind", "vectors", "-e", "mist:m", "-c", str(path))
    assert bad.exit_code == 2 and "chat, embeddings" in bad.stderr


def test_the_wizard_offers_each_providers_embedding_models():
    keys = [ENTER, ENTER]  # mist, its first embedding model
    keys += [DOWN, ENTER, DOWN, DOWN, ENTER]  # oai, "(another model)"
    keys += ["text-embedding-ada-002", ENTER]
    keys += [DOWN, DOWN, ENTER]  # local ...
    keys += ["nomic-embed-text", ENTER]  # no model known: typed
    keys += [DOWN, DOWN, DOWN, ENTER]  # no more entries
    keys += [ENTER]  # this order
    providers = {"mist": "mistral", "oai": "openai", "local": "generic-openai"}
    with keystrokes(*keys):
        entries = wizard.ask_entries(providers, "embeddings")
    assert entries == [
        ("mist", "mistral-embed"),
        ("oai", "text-embedding-ada-002"),
        ("local", "nomic-embed-text"),
    ]
    assert wizard.embedding_models(providers) == [
        "mist:mistral-embed",
        "oai:text-embedding-3-small",
        "oai:text-embedding-3-large",
    ]


def test_chain_add_wizard_writes_the_kind(tmp_path, monkeypatch):
    path = tmp_path / "chain429.yaml"
    path.write_text(WITH_EMBEDDERS)
    monkeypatch.setattr(wizard, "can_prompt", lambda: True)
    with keystrokes(ENTER, ENTER, DOWN, DOWN, ENTER):  # mist, mistral-embed, done
        result = cli("chain", "add", "vectors", "--kind", "embeddings", "-c", str(path))
    assert result.exit_code == 0, result.output
    env = {"MISTRAL_API_KEY": "m", "OPENAI_API_KEY": "o"}
    chain = load_config(path, environ=env).chain("vectors")
    assert chain is not None and chain.kind == "embeddings"
    assert [(e.provider, e.model) for e in chain.entries] == [("mist", "mistral-embed")]


def test_chain_set_kind_keeps_the_entries(tmp_path):
    path = commented(tmp_path)
    result = cli("chain", "set", "main", "--kind", "embeddings", "-c", str(path))
    assert result.exit_code == 0, result.output
    chain = load_config(path, environ=ENV).chain("main")
    assert chain is not None and chain.kind == "embeddings" and len(chain.entries) == 2
    assert_comments_kept(path)
    assert cli("chain", "set", "main", "--kind", "chat", "-c", str(path)).exit_code == 0
    assert "kind" not in path.read_text()
    nothing = cli("chain", "set", "main", "-c", str(path))
    assert nothing.exit_code == 2 and "nothing to change" in nothing.stderr


@pytest.fixture
def logged_proxy(fake, proxy, tmp_path):
    a = fake("a")
    config = chain_config([provider_entry("a", a)], [("a", "chat-a")])
    config["chains"].append(
        {"name": "embed", "kind": "embeddings", "entries": [{"provider": "a", "model": "e"}]}
    )
    config["clients"] = [{"name": "ann", "key": ANN_KEY}]
    database = open_database(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(database)
    return proxy(config, telemetry=Telemetry(database, batch_interval_s=0.01))


ANN_KEY = "ann-key-0123456789abcdef"


def test_stats_split_and_filter_by_endpoint(logged_proxy):
    p = logged_proxy
    client = p.openai()
    client.chat.completions.create(model="main", messages=[{"role": "user", "content": "hi"}])
    p.openai(api_key=ANN_KEY).embeddings.create(model="embed", input=["a", "b"])
    client.completions.create(model="main", prompt="hi")
    env = {"CHAIN429_ADMIN_KEY": PROXY_KEY}
    deadline = time.monotonic() + 10
    while True:
        data = json.loads(cli("stats", "--server", p.url, "--json", env=env).stdout)
        if data["summary"]["requests"] == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert {e["endpoint"]: e["requests"] for e in data["endpoints"]} == {
        "chat": 1,
        "completions": 1,
        "embeddings": 1,
    }
    only = json.loads(
        cli("stats", "--server", p.url, "--endpoint", "embeddings", "--json", env=env).stdout
    )
    assert only["summary"]["requests"] == 1 and only["summary"]["endpoint"] == "embeddings"
    assert [c["chain"] for c in only["chains"]] == ["embed"]
    # Every table is of that route: no per-route table, clients too, no COST column
    # (spend is not split by route).
    plain_only = cli("stats", "--server", p.url, "--endpoint", "embeddings", env=env).stdout
    assert not any(row[0] in ("ENDPOINT", "chat") for row in rows(plain_only))
    assert "COST" not in plain_only
    ann_only = cli(
        "stats", "--server", p.url, "--by", "client", "--endpoint", "embeddings", "--json", env=env
    )
    assert [(c["client"], c["requests"]) for c in json.loads(ann_only.stdout)["clients"]] == [
        ("ann", 1)
    ]
    table = cli("stats", "--server", p.url, env=env)
    assert table.exit_code == 0, table.output
    assert any(row[0] == "ENDPOINT" for row in rows(table.stdout))
    logs = json.loads(
        cli("logs", "--server", p.url, "--endpoint", "completions", "--json", env=env).stdout
    )
    assert [r["endpoint"] for r in logs["data"]] == ["completions"]
    plain = rows(cli("logs", "--server", p.url, env=env).stdout)
    assert plain[0][-1] == "ENDPOINT"
    assert sorted(row[-1] for row in plain[1:]) == ["chat", "completions", "embeddings"]
    bad = cli("stats", "--server", p.url, "--endpoint", "vectors", env=env)
    assert bad.exit_code == 2 and "endpoint" in bad.stderr


def test_stats_names_the_requests_no_provider_answered(logged_proxy):
    p = logged_proxy
    with pytest.raises(openai.NotFoundError):  # no such embeddings model: nobody asked
        p.openai().embeddings.create(model="no-such-model", input="hi")
    p.openai().chat.completions.create(model="main", messages=[{"role": "user", "content": "hi"}])
    env = {"CHAIN429_ADMIN_KEY": PROXY_KEY}
    deadline = time.monotonic() + 10
    while True:
        table = rows(cli("stats", "--server", p.url, env=env).stdout)
        names = [row[0] for row in table]
        providers = table[names.index("PROVIDER") + 1 : names.index("CHAIN")]
        answered = {row[0]: row[1] for row in providers if row}
        if len(answered) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert answered == {"a": "1", "(unanswered)": "1"}
