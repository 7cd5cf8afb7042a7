"""`chain429 limits clear`, run as a user runs it, against a real server."""

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
        [("a", "m-a"), ("b", "m-b")],
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

    def state() -> str:
        limits = httpx.get(f"{p.url}/v1/ratelimits", headers=headers, timeout=10).json()
        return limits["entries"][0]["state"]

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
