"""`chain429 status` shows an entry whose circuit breaker is open, and why."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from chain429.fakes.provider import Reply
from fixtures.processes import CHAIN429
from fixtures.servers import PROXY_KEY, chain_config, provider_entry

HELLO = [{"role": "user", "content": "hi"}]


def run_cli(url: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHAIN429_", "CONFIG_PATH"))}
    env.update(
        {
            "CHAIN429_CONFIG_DIR": str(home),
            "CHAIN429_ADMIN_KEY": PROXY_KEY,
            "CHAIN429_SERVER": url,
            "COLUMNS": "200",
        }
    )
    result = subprocess.run(
        [*CHAIN429, *args], capture_output=True, text=True, timeout=30, cwd=home, env=env
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_status_shows_an_open_breaker_with_its_reason(fake, proxy, tmp_path):
    a, b = fake("a", default=Reply.error(503, "down")), fake("b")
    p = proxy(
        chain_config(
            [provider_entry("a", a), provider_entry("b", b)],
            [("a", "model-a"), ("b", "model-b")],
            settings={"breaker": {"failures": 2, "baseMs": 60000}},
        )
    )
    client = p.openai()
    for _ in range(3):
        client.chat.completions.create(model="main", messages=HELLO)
    assert len(a.requests) == 2

    table = run_cli(p.url, tmp_path, "status")
    assert table.returncode == 0, table.stderr
    rows = {row[1]: row for row in (line.split("\t") for line in table.stdout.splitlines())}
    assert rows["a/model-a"][2:4] == ["broken", "2 transient failures in a row (last: 503)"]
    assert rows["a/model-a"][4].endswith("Z")  # until when
    assert rows["b/model-b"][2] == "available"

    data = json.loads(run_cli(p.url, tmp_path, "status", "--json").stdout)
    (entry,) = [e for e in data["ratelimits"]["entries"] if e["provider"] == "a"]
    assert entry["breaker"]["state"] == "open"
