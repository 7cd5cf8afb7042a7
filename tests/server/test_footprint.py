"""What a plain `chain429 serve` loads: not the drivers of services it was not asked to use.

Idle memory is mostly imported code (issue 15: idle RSS at most 70 MiB, measured
in bench/shape_bench.py). A server that keeps its limits in memory and its log
in SQLite needs neither redis (7 MB) nor psycopg (13 MB, with libpq), nor the
httpx client (the proxy talks to upstreams through aiohttp). The server runs
as a user runs it, in a fresh process under `python -X importtime`, answers a
request, and stops; the test reads the modules it imported.
"""

from __future__ import annotations

import subprocess
import sys

import httpx

from chain429.fakes.provider import FakeProvider
from fixtures.processes import CHAIN429, free_port, stop, wait_healthy, write_config

NOT_ASKED_FOR = {"redis", "psycopg", "psycopg_binary", "httpx", "httpcore"}


def test_a_memory_store_and_sqlite_server_loads_no_redis_postgres_or_httpx(tmp_path):
    port = free_port()
    with FakeProvider("fake") as fake:
        config = write_config(tmp_path, fake, tmp_path / "log.db")
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", *CHAIN429[1:], "serve", "-c", str(config),
             "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=60)
            answer = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json={"model": "c", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": "Bearer k"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
        finally:
            stop(proc)
        assert proc.stderr is not None
        modules = {
            line.rsplit("|", 1)[1].strip()
            for line in proc.stderr.read().splitlines()
            if line.startswith("import time:") and "|" in line
        }
    assert {"sanic", "aiohttp", "peewee", "chain429.server.app"} <= modules  # a real listing
    # Loaded means its code ran: a package's submodules were imported. (The top name
    # alone is listed when peewee's own `import psycopg` is turned away.)
    loaded = {m.split(".")[0] for m in modules if "." in m and m.split(".")[0] in NOT_ASKED_FOR}
    assert loaded == set()
