"""Two `chain429 serve` processes sharing one Redis, as a user runs them.

Each test starts two real server processes (their own ports, their own config
files and request logs) on the real Redis at 127.0.0.1:6379, in a namespace
of the test's own, in front of fake providers that count what reaches them:
`limited` carries the limit under test, `spare` takes whatever falls through.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from chain429.fakes.provider import FakeProvider, Reply
from fixtures.processes import CHAIN429, free_port, stop, wait_healthy
from fixtures.redis import REDIS_URL

KEY = "k"
HELLO = {"model": "c", "messages": [{"role": "user", "content": "hi"}]}


class Instance:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [*CHAIN429, "serve", "-c", str(config), "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "CHAIN429_STATE_URL"},
        )
        health = wait_healthy(self.url, self.proc, timeout=30)
        assert health.get("state_store", {}).get("status") == "ok", health

    def chat(self, **extra: Any) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/chat/completions",
            json={**HELLO, **extra},
            headers={"authorization": f"Bearer {KEY}"},
            timeout=30,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop(self.proc)


def write_config(
    path: Path,
    namespace: str,
    limited: FakeProvider,
    spare: FakeProvider,
    limits: str,
    extra: str = "",
) -> Path:
    path.write_text(
        "version: 1\n"
        "settings:\n"
        f"  apiKeys: [{KEY}]\n"
        f"  databaseUrl: sqlite:///{path.with_suffix('.db')}\n"
        f"  stateStore: {REDIS_URL}\n"
        f"  stateNamespace: {namespace}\n"
        "  stateLeaseMs: 1500\n"
        f"{extra}"
        "providers:\n"
        f"  - {{id: limited, type: generic-openai, baseUrl: '{limited.base_url}', apiKey: a,\n"
        f"     rateLimits: {{{limits}}}}}\n"
        f"  - {{id: spare, type: generic-openai, baseUrl: '{spare.base_url}', apiKey: b}}\n"
        "chains:\n"
        "  - name: c\n"
        "    entries:\n"
        "      - {provider: limited, model: m}\n"
        "      - {provider: spare, model: m}\n"
    )
    return path


@contextmanager
def two_instances(
    tmp_path: Path, namespace: str, limits: str
) -> Iterator[tuple[Instance, Instance, FakeProvider, FakeProvider]]:
    with FakeProvider("limited") as limited, FakeProvider("spare") as spare:
        configs = [
            write_config(tmp_path / f"{name}.yaml", namespace, limited, spare, limits)
            for name in ("a", "b")
        ]
        started: list[Instance] = []
        try:
            started += [Instance(configs[0]), Instance(configs[1])]
            yield started[0], started[1], limited, spare
        finally:
            for instance in started:
                instance.stop()


def answered_by(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["X-429chain-Provider"]


def test_twenty_per_minute_means_twenty_across_both_instances(tmp_path, redis_ns):
    with two_instances(tmp_path, redis_ns, "requestsPerMinute: 20") as (a, b, limited, spare):

        async def burst() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=200)
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                headers = {"authorization": f"Bearer {KEY}"}
                return await asyncio.gather(
                    *(
                        client.post(
                            f"{(a, b)[n % 2].url}/v1/chat/completions", json=HELLO, headers=headers
                        )
                        for n in range(100)
                    )
                )

        answers = asyncio.run(burst())
    by = [answered_by(r) for r in answers]
    assert len(limited.requests) == 20 and by.count("limited/m") == 20
    assert len(spare.requests) == 80 and by.count("spare/m") == 80


def test_a_429_seen_by_one_instance_is_skipped_by_the_other(tmp_path, redis_ns):
    with two_instances(tmp_path, redis_ns, "requestsPerMinute: 100") as (a, b, limited, spare):
        limited.script(Reply.rate_limited("60"))
        first = a.chat()
        assert answered_by(first) == "spare/m"
        assert "limited/m" in first.headers["X-429chain-Trace"]
        second = b.chat()
        assert answered_by(second) == "spare/m"
        assert len(limited.requests) == 1  # b did not ask it again
        report = httpx.get(
            f"{b.url}/v1/ratelimits", headers={"authorization": f"Bearer {KEY}"}, timeout=10
        ).json()
        states = {e["provider"]: e["state"] for e in report["entries"]}
        assert states["limited"] == "cooling"


def test_a_killed_instances_concurrency_slot_comes_back_within_the_lease(tmp_path, redis_ns):
    with two_instances(tmp_path, redis_ns, "concurrentRequests: 1") as (a, b, limited, spare):
        limited.script(Reply(delay=20))  # the request a holds when it dies
        holder = threading.Thread(target=lambda: _quietly(a.chat), daemon=True)
        holder.start()
        deadline = time.monotonic() + 10
        while not limited.requests:
            assert time.monotonic() < deadline, "a never asked the limited entry"
            time.sleep(0.02)
        assert answered_by(b.chat()) == "spare/m"  # the one slot is a's

        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(timeout=10)
        killed_at = time.monotonic()
        while answered_by(b.chat()) != "limited/m":
            assert time.monotonic() - killed_at < 1.5 + 1.5, "the slot did not come back"
            time.sleep(0.1)
        # Not before a stopped renewing: at most a lease, at least a lease less one renewal.
        assert time.monotonic() - killed_at > 0.5


def _quietly(call: Any) -> None:
    with contextlib.suppress(httpx.HTTPError):  # its server was killed
        call()


def test_the_days_count_survives_restarting_both_instances(tmp_path, redis_ns):
    with two_instances(tmp_path, redis_ns, "requestsPerDay: 2") as (a, b, limited, spare):
        assert [answered_by(a.chat()), answered_by(b.chat())] == ["limited/m"] * 2
        a.stop()
        b.stop()
        a2, b2 = Instance(a.config), Instance(b.config)
        try:
            assert [answered_by(a2.chat()), answered_by(b2.chat())] == ["spare/m"] * 2
        finally:
            a2.stop()
            b2.stop()
    assert len(limited.requests) == 2


def test_a_hot_reload_on_one_instance_keeps_the_shared_state(tmp_path, redis_ns):
    with two_instances(tmp_path, redis_ns, "requestsPerMinute: 2") as (a, b, limited, spare):
        assert [answered_by(a.chat()), answered_by(b.chat())] == ["limited/m"] * 2
        text = a.config.read_text()
        a.config.write_text(
            text.replace("stateLeaseMs: 1500\n", "stateLeaseMs: 1500\n  cooldownDefaultMs: 45000\n")
        )
        a.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while httpx.get(f"{a.url}/health", timeout=5).json()["config_generation"] < 2:
            assert time.monotonic() < deadline, "a did not reload"
            time.sleep(0.05)
        assert [answered_by(a.chat()), answered_by(b.chat())] == ["spare/m"] * 2
    assert len(limited.requests) == 2


@pytest.fixture(autouse=True)
def _bounded() -> Iterator[None]:
    """Each test here stops by itself: processes are stopped in `two_instances`."""
    started = time.monotonic()
    yield
    assert time.monotonic() - started < 120
