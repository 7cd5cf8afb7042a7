"""`chain429 serve --workers N`: several processes on one port, one set of limits in Redis.

Real processes, as a user runs them: the server's worker processes answer on
one port, share the real Redis at 127.0.0.1:6379 (a namespace of the test's
own), each writes its own request records to the one request log, and
SIGTERM stops them all without losing a record.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from test_redis_instances import HELLO, KEY, write_config

from chain429.fakes.provider import FakeProvider, Reply
from fixtures.processes import CHAIN429, free_port, run, stop, wait_healthy
from fixtures.processes import write_config as one


def test_more_than_one_worker_without_a_shared_store_is_refused(tmp_path):
    with FakeProvider("p") as fake:
        config = one(tmp_path, fake, tmp_path / "log.db")
        done = run(
            "serve",
            "-c",
            str(config),
            "--port",
            "0",
            "--workers",
            "2",
            env={"CHAIN429_STATE_URL": ""},
        )
    assert done.returncode == 2
    said = " ".join(done.stderr.split())
    assert "--workers 2 needs a shared state store" in said
    assert "each would keep its own limits" in said
    assert "settings.stateStore: redis://" in said and "docs/scaling.md" in said


def requests_logged(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM requests").fetchone()
    return int(count)


def test_two_workers_share_one_limit_answer_from_two_pids_and_stop_cleanly(tmp_path, redis_ns):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    headers = {"authorization": f"Bearer {KEY}"}
    with FakeProvider("limited") as limited, FakeProvider("spare") as spare:
        config = write_config(
            tmp_path / "w.yaml", redis_ns, limited, spare, "requestsPerMinute: 20"
        )
        proc = subprocess.Popen(
            [*CHAIN429, "serve", "-c", str(config), "--port", str(port), "--workers", "2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            # Sanic's manager kills a stuck stop with killpg: not this test's group.
            start_new_session=True,
        )
        try:
            wait_healthy(url, proc, timeout=60)

            # Both workers serve: fresh connections land on either process.
            pids: set[int] = set()
            deadline = time.monotonic() + 30
            while len(pids) < 2:
                assert time.monotonic() < deadline, f"one worker answered everything: {pids}"
                with httpx.Client(headers=headers, timeout=10) as client:
                    body = client.get(f"{url}/v1/admin/instances").json()
                pids.add(body["instances"][0]["pid"])
            assert proc.pid not in pids  # the manager serves nothing itself
            with httpx.Client(headers=headers, timeout=10) as client:
                listed = client.get(f"{url}/v1/admin/instances").json()["instances"]
            assert {r["pid"] for r in listed} == pids  # each worker lists both

            async def burst() -> list[httpx.Response]:
                limits = httpx.Limits(max_connections=100)
                async with httpx.AsyncClient(timeout=60, limits=limits, headers=headers) as client:
                    return await asyncio.gather(
                        *(client.post(f"{url}/v1/chat/completions", json=HELLO) for _ in range(100))
                    )

            answers = asyncio.run(burst())
            assert [r.status_code for r in answers] == [200] * 100
            by = [r.headers["X-429chain-Provider"] for r in answers]
            assert len(limited.requests) == 20 and by.count("limited/m") == 20
            assert len(spare.requests) == 80

            # SIGTERM while requests are in flight: they finish, and every record is written.
            spare.always(Reply(delay=1.0))
            slow: list[httpx.Response] = []

            def ask() -> None:
                slow.append(
                    httpx.post(
                        f"{url}/v1/chat/completions", json=HELLO, headers=headers, timeout=30
                    )
                )

            threads = [threading.Thread(target=ask) for _ in range(4)]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 10
            while len(spare.requests) < 84:
                assert time.monotonic() < deadline, "the slow requests never reached spare"
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
            for thread in threads:
                thread.join(timeout=30)
            assert [r.status_code for r in slow] == [200] * 4
        finally:
            if proc.poll() is None:
                stop(proc)
    assert requests_logged(tmp_path / "w.db") == 104


def processes() -> list[tuple[int, list[str], bytes]]:
    """Every process: (pid, the fields of /proc/PID/stat after the name, its command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        found.append((int(entry.name), fields, cmdline))
    return found


def spawned_children(pid: int) -> list[int]:
    """The processes `pid` started with multiprocessing's spawn (Sanic's manager and workers)."""
    return [p for p, fields, cmd in processes() if int(fields[1]) == pid and b"spawn_main" in cmd]


def session_processes(session: int) -> list[int]:
    """Every live process of `session` (the server's own: it was started in a new session)."""
    return [p for p, fields, _ in processes() if int(fields[3]) == session and fields[0] != "Z"]


@pytest.mark.parametrize(
    ("children_before", "stop_signal", "then_s"),
    [
        (1, signal.SIGTERM, 0.0),  # the worker-state server is up, no worker yet
        (2, signal.SIGINT, 0.0),  # Ctrl-C while the second worker is being spawned
        (3, signal.SIGTERM, 0.0),  # both workers spawned, still importing
        (3, signal.SIGTERM, 0.3),  # the manager waits for the workers' start
    ],
    ids=["state-server", "one-worker-ctrl-c", "both-workers", "wait-for-start"],
)
def test_a_stop_while_the_workers_start_ends_the_server(
    tmp_path, redis_ns, children_before, stop_signal, then_s
):
    """A stop at any moment of the workers' start: exit code 0, no process left behind.

    (Sanic's manager used to wait for ever for workers it had just stopped, and
    its signal handler, landing inside a call to the worker-state server,
    crashed the manager with exit code 1.)
    """
    port = free_port()
    with FakeProvider("limited") as limited, FakeProvider("spare") as spare:
        config = write_config(tmp_path / "w.yaml", redis_ns, limited, spare, "")
        proc = subprocess.Popen(
            [*CHAIN429, "serve", "-c", str(config), "--port", str(port), "--workers", "2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            # Its own session: Sanic's manager kills a stuck stop with killpg, and
            # the session finds every process the server started.
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while len(spawned_children(proc.pid)) < children_before:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.002)
            time.sleep(then_s)
            proc.send_signal(stop_signal)
            try:
                code = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                left = {p: f[0] for p, f, _ in processes() if int(f[3]) == proc.pid}
                os.killpg(proc.pid, signal.SIGKILL)  # its own session and process group
                _, err = proc.communicate(timeout=5)
                pytest.fail(f"still running 15 s after the stop: {left}\n{err}")
            assert code == 0, proc.stderr.read() if proc.stderr else ""
            assert not httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).is_success
        except httpx.TransportError:
            pass  # nobody listens: as it should be
        finally:
            if proc.poll() is None:
                stop(proc)
    deadline = time.monotonic() + 5
    while alive := session_processes(proc.pid):
        assert time.monotonic() < deadline, f"left running: {alive}"
        time.sleep(0.05)
