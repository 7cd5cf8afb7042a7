"""`chain429 serve` keeps a request log, and a graceful stop under load loses no record."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time

import httpx

from chain429.fakes.provider import FakeProvider, Reply
from fixtures.processes import CHAIN429, free_port, wait_healthy, write_config

HELLO = [{"role": "user", "content": "hi"}]


def test_sigterm_under_load_writes_a_row_for_every_answered_request(tmp_path):
    db = tmp_path / "log.db"
    # A little latency upstream keeps requests in flight when the stop arrives.
    with FakeProvider("fake", default=Reply(delay=0.02)) as fake:
        config = write_config(tmp_path, fake, db)
        port = free_port()
        proc = subprocess.Popen(
            [*CHAIN429, "serve", "-c", str(config), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc)
            answered = []
            lock = threading.Lock()
            deadline = time.monotonic() + 10

            def load():
                with httpx.Client(base_url=url, headers={"authorization": "Bearer k"}) as http:
                    while time.monotonic() < deadline:
                        try:
                            response = http.post(
                                "/v1/chat/completions", json={"model": "c", "messages": HELLO}
                            )
                        except httpx.HTTPError:
                            return  # the server has stopped listening
                        with lock:
                            answered.append(response.headers.get("x-request-id"))

            threads = [threading.Thread(target=load) for _ in range(16)]
            for thread in threads:
                thread.start()
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            assert proc.wait(timeout=20) == 0
            # Keep-alive clients do not hold the stop open: each gets its answer, then a close.
            assert time.monotonic() - stopped_at < 5
            for thread in threads:
                thread.join(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert len(answered) > 50
    with sqlite3.connect(db) as conn:
        ids = {row[0] for row in conn.execute("SELECT id FROM requests")}
        trail = conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
        secrets = conn.execute(
            "SELECT COUNT(*) FROM requests WHERE key_label LIKE '%k%' AND key_label != 'key#1'"
        ).fetchone()[0]
    assert ids == set(answered)
    assert trail == len(answered)
    assert secrets == 0
    assert "s3cret" not in db.read_bytes().decode("latin-1")
