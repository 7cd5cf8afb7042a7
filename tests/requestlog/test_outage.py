"""Nothing lost silently: the request log rides out a database that goes away, fills up or
loses a commit's answer, and what it cannot keep is counted in /health and /metrics.

PostgreSQL outages are real: chain429 talks to the shared server through a TCP
proxy the test cuts (tcp_proxy.py); SQLite's disk fills up for real through
`PRAGMA max_page_count` (SQLITE_FULL, "database or disk is full").
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import peewee
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chain429.config.model import Config
from chain429.requestlog.database import migrate, open_database
from chain429.requestlog.records import RequestRecord, new_request_id
from chain429.requestlog.tables import (
    ALL_MODELS,
    AttemptRow,
    HourlyAttemptRollup,
    HourlyRollup,
    RequestRow,
)
from chain429.requestlog.writer import Telemetry
from chain429.server.app import create_app
from chain429.server.serving import ServerThread
from fixtures.servers import PROXY_KEY, chain_config, provider_entry
from fixtures.tcp_proxy import TcpProxy

HELLO = [{"role": "user", "content": "hi"}]
SECRET = "hunter2-s3cret"  # trust auth ignores it; it must still never be shown


# ------------------------------------------------------------------ helpers


@pytest.fixture(name="proxied_pg")
def proxied_pg_fixture(postgres_url: str) -> Iterator[tuple[TcpProxy, peewee.Database]]:
    """The test session's PostgreSQL database, reached through a proxy the test controls."""
    parts = urlsplit(postgres_url)
    with TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)) as proxy:
        netloc = f"{parts.username or 'postgres'}:{SECRET}@127.0.0.1:{proxy.port}"
        db = open_database(urlunsplit(parts._replace(netloc=netloc)))
        migrate(db)
        try:
            yield proxy, db
        finally:
            proxy.restore()
            db.connect(reuse_if_open=True)
            db.drop_tables(ALL_MODELS, safe=True)
            db.close()


def serve(fake: Any, telemetry: Telemetry) -> ServerThread:
    config = Config.model_validate(chain_config([provider_entry("a", fake)], [("a", "m")]))
    return ServerThread(create_app(config, telemetry=telemetry)).start()


def client(server: ServerThread) -> httpx.Client:
    headers = {"authorization": f"Bearer {PROXY_KEY}"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=10)


def chat(http: httpx.Client) -> str:
    response = http.post("/v1/chat/completions", json={"model": "main", "messages": HELLO})
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


def health_log(http: httpx.Client) -> tuple[str, dict[str, Any]]:
    body = http.get("/health").json()
    return body["status"], body["log"]


def log_metrics(http: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name.startswith("chain429_log_"):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def assert_logged_exactly(ids: set[str]) -> None:
    """One row per answered request, its trail (one entry) and both rollups: no more, no less."""
    assert {r.id for r in RequestRow.select(RequestRow.id)} == ids
    assert AttemptRow.select().count() == len(ids)
    assert HourlyRollup.select(peewee.fn.SUM(HourlyRollup.requests)).scalar() == len(ids)
    assert HourlyAttemptRollup.select(peewee.fn.SUM(HourlyAttemptRollup.count)).scalar() == len(ids)


# ------------------------------------------------------------------ PostgreSQL goes away


@pytest.mark.slow
def test_a_postgres_outage_under_load_loses_no_record(fake, proxied_pg):
    """The incident as it was found: PostgreSQL gone for seconds while clients keep asking."""
    proxy, db = proxied_pg
    server = serve(fake("a"), Telemetry(db))
    answered: set[str] = set()
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load() -> None:
        with client(server) as http:
            while not stop.is_set():
                try:
                    request_id = chat(http)  # the database is never on the request path
                except BaseException as exc:  # reported below, not lost in the thread
                    errors.append(exc)
                    return
                with lock:
                    answered.add(request_id)
                time.sleep(0.002)

    threads = [threading.Thread(target=load) for _ in range(4)]
    during: list[tuple[str, dict[str, Any]]] = []
    try:
        with client(server) as http:
            for thread in threads:
                thread.start()
            time.sleep(0.5)
            proxy.cut()  # every connection dies (a batch may be mid-flight), new ones refused
            outage_ends = time.monotonic() + 2.0
            while time.monotonic() < outage_ends:
                during.append(health_log(http))
                time.sleep(0.1)
            failing_metrics = log_metrics(http)
            proxy.restore()
            time.sleep(0.3)
            stop.set()
            for thread in threads:
                thread.join(10)
            assert wait_until(lambda: health_log(http)[1]["pending"] == 0)
            status, after = health_log(http)
            metrics = log_metrics(http)
    finally:
        stop.set()
        server.stop()

    # While it was down: records waited, the error was shown (no password), nothing dropped.
    assert any(s == "degraded" and h["pending"] > 0 and h["last_error"] for s, h in during)
    assert all(h["dropped"] == 0 for _, h in during)
    assert all(SECRET not in str(h["last_error"]) for _, h in during)
    assert failing_metrics[("chain429_log_pending", ())] > 0
    assert failing_metrics[("chain429_log_write_failures_total", ())] > 0
    # Back up: every answered request is written, exactly once; the error is gone.
    assert not errors
    assert len(answered) > 200
    assert status == "ok"
    assert after == {"dropped": 0, "pending": 0, "last_error": None, "written": len(answered)}
    assert metrics[("chain429_log_written_total", ())] == len(answered)
    assert sum(v for (name, _), v in metrics.items() if name == "chain429_log_dropped_total") == 0
    with db.connection_context():
        assert_logged_exactly(answered)


def test_a_commit_whose_answer_never_came_is_not_written_twice(proxied_pg):
    """The connection dies after PostgreSQL committed a batch but before chain429 heard so:
    the retry finds the rows there and writes neither them nor their rollups again."""
    proxy, db = proxied_pg
    telemetry = Telemetry(db, retention_days=0).start()
    try:
        first = [RequestRecord(new_request_id(), time.time(), chain="c", provider="p")]
        for record in first:
            assert telemetry.submit(record)
        assert telemetry.flush(5)
        proxy.cut_after(b"COMMIT")
        batch = [
            RequestRecord(new_request_id(), time.time(), chain="c", provider="p") for _ in range(30)
        ]
        for record in batch:
            assert telemetry.submit(record)
        assert proxy.triggered.wait(5)
        assert telemetry.flush(10)
        assert telemetry.failures >= 1  # the lost answer was a failed write...
        assert telemetry.last_error is None  # ...and the retry succeeded
        assert (telemetry.written, telemetry.dropped) == (31, 0)
    finally:
        assert telemetry.stop()
    with db.connection_context():
        assert RequestRow.select().count() == 31
        assert HourlyRollup.select(peewee.fn.SUM(HourlyRollup.requests)).scalar() == 31


def cli_status(server: ServerThread, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAIN429_")}
    env.update(
        {"CHAIN429_ADMIN_KEY": PROXY_KEY, "CHAIN429_CONFIG_DIR": str(home), "COLUMNS": "300"}
    )
    command = [sys.executable, "-m", "chain429.cli.main", "status", "--server", server.url]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, env=env, cwd=home)


def test_a_tiny_buffer_counts_every_drop_in_health_and_metrics(fake, proxied_pg, tmp_path):
    proxy, db = proxied_pg
    server = serve(fake("a"), Telemetry(db, buffer_size=3))
    try:
        with client(server) as http:
            proxy.cut()
            ids = [chat(http) for _ in range(10)]  # answered all the same
            status, during = health_log(http)
            dropped_metrics = log_metrics(http)
            told = cli_status(server, tmp_path)
            proxy.restore()
            assert wait_until(lambda: health_log(http)[1]["pending"] == 0)
            status_after, after = health_log(http)
            metrics_after = log_metrics(http)
    finally:
        server.stop()
    # The first three wait in the buffer; the seven that found it full are counted.
    assert status == "degraded"
    assert during["pending"] == 3 and during["dropped"] == 7 and during["written"] == 0
    assert dropped_metrics[("chain429_log_dropped_total", (("reason", "full"),))] == 7
    assert dropped_metrics[("chain429_log_pending", ())] == 3
    assert told.returncode == 0, told.stderr
    assert "degraded: request log: 7 records dropped, 3 waiting, database failing:" in told.stderr
    assert after == {"dropped": 7, "pending": 0, "last_error": None, "written": 3}
    assert status_after == "degraded"  # records were dropped minutes ago at most
    assert metrics_after[("chain429_log_dropped_total", (("reason", "full"),))] == 7
    assert metrics_after[("chain429_log_dropped_total", (("reason", "rejected"),))] == 0
    assert metrics_after[("chain429_log_written_total", ())] == 3
    with db.connection_context():
        assert {r.id for r in RequestRow.select(RequestRow.id)} == set(ids[:3])


# ------------------------------------------------------------------ SQLite fills up


def test_a_full_sqlite_disk_keeps_records_until_there_is_room(fake, tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(db)
    with db.connection_context():
        # No page beyond those the tables have now: SQLite answers SQLITE_FULL, exactly
        # as on a full disk, once the first pages are used up. Every new connection
        # (the writer reconnects after each failure) gets the same limit.
        db.pragma("max_page_count", db.pragma("page_count"), permanent=True)
    server = serve(fake("a"), Telemetry(db))
    answered: list[str] = []
    try:
        with client(server) as http:
            for _ in range(400):
                answered.append(chat(http))
                if health_log(http)[1]["last_error"]:
                    break
            status, full = health_log(http)
            answered += [chat(http) for _ in range(20)]  # these wait too
            assert health_log(http)[1]["pending"] >= 20
            with db.connection_context():
                db.pragma("max_page_count", 1_000_000, permanent=True)  # room again
            assert wait_until(lambda: health_log(http)[1]["pending"] == 0)
            status_after, after = health_log(http)
    finally:
        server.stop()
    assert status == "degraded" and "database or disk is full" in full["last_error"]
    assert full["dropped"] == 0 and full["pending"] > 0
    assert status_after == "ok"
    assert after == {"dropped": 0, "pending": 0, "last_error": None, "written": len(answered)}
    with db.connection_context():
        assert_logged_exactly(set(answered))
        # In order: the batch that hit the full disk went in before the records behind it.
        trails = AttemptRow.select(AttemptRow.request).order_by(AttemptRow.id)
        assert [a.request_id for a in trails] == answered
