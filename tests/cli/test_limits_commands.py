"""`chain429 limits clear` and `chain429 entry pause|resume`, run as a user runs them,
against a real server; `chain429 status` shows what they did."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from chain429.fakes.provider import Reply
from fixtures.processes import run
from fixtures.servers import chain_config, provider_entry

ADMIN_KEY = "limits-admin-key-0123"
PROXY_KEY = "limits-proxy-key-0123"
HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture
def cooling(fake, proxy):
    """A server whose first entry is cooling down after a 429, and how to talk to it."""
    a, b = fake("a"), fake("b")
    config = chain_config(
        [provider_entry("a", a), provider_entry("b", b)],
        [("a", "m-a"), ("b", "m-b"), ("b", "vendor/m-b2:free")],
        settings={"apiKeys": [PROXY_KEY], "adminKeys": [ADMIN_KEY]},
    )
    p = proxy(config)
    a.script(Reply.rate_limited(retry_after="600"))
    headers = {"authorization": f"Bearer {PROXY_KEY}"}
    answer = httpx.post(
        f"{p.url}/v1/chat/completions",
        headers=headers,
        json={"model": "main", "messages": HELLO},
        timeout=10,
    )
    assert answer.headers["x-429chain-trace"] == "a/m-a=429,b/m-b=200"

    def state(which: int = 0) -> str:
        limits = httpx.get(f"{p.url}/v1/ratelimits", headers=headers, timeout=10).json()
        return str(limits["entries"][which]["state"])

    # `run` adds os.environ: blank out what could point the CLI at another server.
    env = {k: "" for k in os.environ if k in ("CHAIN429_SERVER", "CHAIN429_ADMIN_KEY")}
    return p, state, env


def test_limits_clear_ends_an_entrys_cooldown(cooling):
    p, state, env = cooling
    assert state() == "cooling"
    result = run(
        "limits", "clear", "a", "m-a", "--server", p.url,
        env={**env, "CHAIN429_ADMIN_KEY": ADMIN_KEY},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cleared 1 cooldown of a/m-a"
    assert state() == "available"


def test_limits_clear_of_a_provider_prints_json_when_asked(cooling):
    p, state, env = cooling
    result = run(
        "limits", "clear", "a", "--json", "--server", p.url,
        env={**env, "CHAIN429_ADMIN_KEY": ADMIN_KEY},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"cleared": 1}
    assert state() == "available"


def test_limits_clear_says_why_it_could_not(cooling):
    p, state, env = cooling
    proxy_key = run(
        "limits", "clear", "a", "--server", p.url, env={**env, "CHAIN429_ADMIN_KEY": PROXY_KEY}
    )
    assert proxy_key.returncode == 2
    assert "A proxy key may not change" in proxy_key.stderr
    unknown = run(
        "limits", "clear", "zzz", "--server", p.url,
        env={**env, "CHAIN429_ADMIN_KEY": ADMIN_KEY},
    )  # fmt: skip
    assert unknown.returncode == 2
    assert "No provider with id 'zzz'" in unknown.stderr
    assert state() == "cooling"


def test_limits_clear_takes_an_entry_as_provider_slash_model(cooling):
    p, state, env = cooling
    admin = {**env, "CHAIN429_ADMIN_KEY": ADMIN_KEY}
    result = run("limits", "clear", "a/m-a", "--server", p.url, env=admin)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cleared 1 cooldown of a/m-a"
    assert state() == "available"
    # Split at the first slash: the model keeps its own.
    other = run("limits", "clear", "b/vendor/m-b2:free", "--json", "--server", p.url, env=admin)
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout) == {"cleared": 0}
    unknown = run("limits", "clear", "b/vendor", "--server", p.url, env=admin)
    assert unknown.returncode == 2
    assert "No chain entry b/vendor" in unknown.stderr
    twice = run("limits", "clear", "a/m-a", "m-a", "--server", p.url, env=admin)
    assert twice.returncode == 2 and "names an entry already" in twice.stderr


def status_rows(p, env) -> dict[str, list[str]]:
    result = run("status", "--server", p.url, env=env)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    return {row[1]: row for row in rows[1:]}


def test_entry_pause_and_resume_show_in_status(cooling):
    p, state, env = cooling
    admin = {**env, "CHAIN429_ADMIN_KEY": ADMIN_KEY}
    paused = run("entry", "pause", "b/vendor/m-b2:free", "--server", p.url, env=admin)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == "paused b/vendor/m-b2:free"
    again = run("entry", "pause", "b/vendor/m-b2:free", "--server", p.url, env=admin)
    assert again.stdout.startswith("b/vendor/m-b2:free was paused already, since ")
    assert again.stdout.strip().endswith("by admin#1")

    row = status_rows(p, admin)["b/vendor/m-b2:free"]
    assert row[2] == "paused"
    assert row[3].startswith("entry b/vendor/m-b2:free paused by admin#1, since 20")
    assert row[4] == ""  # no end: it lasts until resumed

    provider = run("entry", "pause", "b", "--json", "--server", p.url, env=admin)
    assert json.loads(provider.stdout)["paused"]["scope"] == "provider"
    rows = status_rows(p, admin)
    assert rows["b/m-b"][2] == "paused" and rows["b/m-b"][3].startswith("provider b paused")

    one = run("entry", "resume", "b/vendor/m-b2:free", "--server", p.url, env=admin)
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() == "resumed b/vendor/m-b2:free"
    assert "provider b is still paused as a whole" in one.stderr
    whole = run("entry", "resume", "b", "--json", "--server", p.url, env=admin)
    assert json.loads(whole.stdout) == {"resumed": 1, "provider_paused": False}
    assert {row[2] for name, row in status_rows(p, admin).items() if name.startswith("b/")} == {
        "available"
    }
    not_paused = run("entry", "resume", "b", "--server", p.url, env=admin)
    assert not_paused.stdout.strip() == "b was not paused"


def test_entry_pause_says_why_it_could_not(cooling):
    p, state, env = cooling
    proxy_key = run(
        "entry", "pause", "a", "--server", p.url, env={**env, "CHAIN429_ADMIN_KEY": PROXY_KEY}
    )
    assert proxy_key.returncode == 2
    assert "A proxy key may not change" in proxy_key.stderr
    admin = {**env, "CHAIN429_ADMIN_KEY": ADMIN_KEY}
    unknown = run("entry", "pause", "a/nope", "--server", p.url, env=admin)
    assert unknown.returncode == 2 and "No chain entry a/nope" in unknown.stderr
    malformed = run("entry", "pause", "a/", "--server", p.url, env=admin)
    assert malformed.returncode == 2 and "is not PROVIDER or PROVIDER/MODEL" in malformed.stderr
