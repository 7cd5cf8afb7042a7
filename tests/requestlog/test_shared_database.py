"""Several chain429 instances, one request log: every row lands, rollups equal the raw rows.

Each "instance" here is a real process with its own Telemetry writer (or, for
retention, its own writer thread and connection), on both backends: the
machine's PostgreSQL (a database of this session's own, dropped after; see
conftest) and one SQLite file shared by two processes on one host.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import peewee
import pytest

from chain429.requestlog import writer as writer_module
from chain429.requestlog.database import RETENTION_LOCK_KEY, is_postgres
from chain429.requestlog.records import RequestRecord
from chain429.requestlog.tables import (
    LATENCY_BUCKETS_MS,
    HourlyAttemptRollup,
    HourlyRollup,
    RequestRow,
)
from chain429.requestlog.writer import HOUR_MS, Telemetry, latency_bucket
from fixtures.trails import logged_steps

MakeRecord = Callable[..., RequestRecord]
DAY_S = 86400
RECORDS_PER_INSTANCE = 600

# One instance: open the log, wait for "go" on stdin so both start writing
# together, write small batches (many transactions, all into the same three
# hours and the same keys as the other instance), report what it wrote.
INSTANCE = textwrap.dedent(
    """
    import json, sys
    from chain429.requestlog.database import open_database
    from chain429.requestlog.records import AttemptRecord, RequestRecord, new_request_id
    from chain429.requestlog.writer import Telemetry

    url, count, hour_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    latencies = [0.5, 5, 7, 30, 99, 250, 999.9, 2400, 4000, 12000, 30000, 90000, 200000]
    outcomes = [(200, "success"), (429, "all_providers_exhausted"), (200, "stream_interrupted")]
    tokens = ["200", "429", "timeout", "skip:cooldown"]
    records = []
    for i in range(count):
        status, outcome = outcomes[i % 3]
        trail = [
            AttemptRecord(n, ("groq", "cerebras")[(i + n) % 2], "llama", token, None,
                          None if token.startswith("skip:") else float(i % 13) + 0.5)
            for n, token in enumerate(tokens[: 1 + i % 4], 1)
        ]
        records.append(RequestRecord(
            id=new_request_id(), started_at=hour_s + (i % 3) * 3600 + (i % 3000) * 0.9,
            key_label="k", chain=("main", "fast")[i % 2], requested_model="auto",
            provider=("groq", "cerebras", None)[i % 3], model="llama", status=status,
            outcome=outcome, attempts=i % 4, latency_ms=latencies[i % len(latencies)],
            prompt_tokens=None if i % 5 == 0 else i, completion_tokens=i % 7,
            total_tokens=None, trail=trail,
        ))
    telemetry = Telemetry(open_database(url), batch_rows=7, batch_interval_s=0.0,
                          retention_days=0)
    print("ready", flush=True)
    sys.stdin.readline()
    telemetry.start()
    for record in records:
        telemetry.submit(record)
    ok = telemetry.stop(30)
    print(json.dumps({"ok": ok, "written": telemetry.written, "dropped": telemetry.dropped,
                      "failures": telemetry.failures, "last_error": telemetry.last_error}))
    """
)


def url_of(db: peewee.Database, request: pytest.FixtureRequest) -> str:
    if is_postgres(db):
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{db.database}"


def run_instances(url: str, count: int, hour_s: float, instances: int = 2) -> list[dict[str, Any]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", INSTANCE, url, str(count), str(hour_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(instances)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:  # as close together as two writes to pipes get
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = [json.loads(proc.communicate(timeout=60)[0]) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert all(proc.returncode == 0 for proc in procs)
    return reports


def expected_request_rollup() -> dict[tuple[Any, ...], dict[str, Any]]:
    """What `hourly_rollup` must hold, recomputed from the raw request rows."""
    width = len(LATENCY_BUCKETS_MS) + 1
    expected: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(
        lambda: (
            {"requests": 0, "errors": 0, "attempts": 0, "prompt_tokens": 0}
            | {"completion_tokens": 0, "latency_sum_ms": 0.0, "histogram": [0] * width}
        )
    )
    for row in RequestRow.select():
        key = (row.time_ms // HOUR_MS * HOUR_MS, row.chain or "", row.provider or "", row.outcome)
        totals = expected[key]
        totals["requests"] += 1
        totals["errors"] += row.status >= 400 or row.outcome != "success"
        totals["attempts"] += row.attempts
        totals["prompt_tokens"] += row.prompt_tokens or 0
        totals["completion_tokens"] += row.completion_tokens or 0
        totals["latency_sum_ms"] += row.latency_ms
        totals["histogram"][latency_bucket(row.latency_ms)] += 1
    return dict(expected)


def assert_rollups_equal_raw_rows() -> None:
    expected = expected_request_rollup()
    stored = {(r.hour_ms, r.chain, r.provider, r.outcome): r for r in HourlyRollup.select()}
    assert set(stored) == set(expected)
    for key, totals in expected.items():
        row = stored[key]
        for name in ("requests", "errors", "attempts", "prompt_tokens", "completion_tokens"):
            assert getattr(row, name) == totals[name], (key, name)
        assert json.loads(row.latency_histogram) == totals["histogram"], key
        assert row.latency_sum_ms == pytest.approx(totals["latency_sum_ms"]), key

    trails: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0.0])
    for _, time_ms, a in logged_steps():
        totals = trails[(time_ms // HOUR_MS * HOUR_MS, a.provider, a.model, a.outcome)]
        totals[0] += 1
        totals[1] += a.latency_ms or 0.0
    counted = {
        (r.hour_ms, r.provider, r.model, r.outcome): (r.count, r.latency_sum_ms)
        for r in HourlyAttemptRollup.select()
    }
    assert set(counted) == set(trails)
    for key, (count, latency_sum) in trails.items():
        assert counted[key][0] == count, key
        assert counted[key][1] == pytest.approx(latency_sum), key


def test_two_instances_racing_on_the_same_hours_keep_rollups_equal_to_raw_rows(
    migrated: peewee.Database, request: pytest.FixtureRequest
) -> None:
    """Two processes write batches of 7 into the same three hours and the same
    rollup keys at once, twice over (the second round merges into rows the
    first created): nothing is lost, nothing counted twice, histograms included."""
    hour_s = (int(time.time() * 1000) // HOUR_MS - 3) * HOUR_MS / 1000
    url = url_of(migrated, request)
    reports = run_instances(url, RECORDS_PER_INSTANCE, hour_s)
    reports += run_instances(url, RECORDS_PER_INSTANCE, hour_s)
    for report in reports:
        assert report["ok"] and report["dropped"] == 0, report
        assert report["written"] == RECORDS_PER_INSTANCE, report
    total = 4 * RECORDS_PER_INSTANCE
    assert RequestRow.select().count() == total
    assert HourlyRollup.select(peewee.fn.SUM(HourlyRollup.requests)).scalar() == total
    assert len({r.hour_ms for r in HourlyRollup.select()}) == 3
    assert_rollups_equal_raw_rows()
    migrated.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_two_instances_pruning_together_delete_each_row_once(
    migrated: peewee.Database, make_record: MakeRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both instances' retention timers fire over the same expired rows: the old
    rows and their hours go, the recent ones and their rollups stay exact, and
    neither instance meets an error (a deadlock or a lock timeout would count)."""
    monkeypatch.setattr(writer_module, "_RETENTION_BATCH", 7)  # many small steps to interleave
    now = time.time()
    loader = Telemetry(migrated, batch_interval_s=0.0, retention_days=0).start()
    for i in range(300):
        loader.submit(make_record(started_at=now - 40 * DAY_S + i * 60, chain="old"))
    recent = [make_record(started_at=now - i) for i in range(5)]
    for record in recent:
        loader.submit(record)
    assert loader.stop()
    first, second = (
        Telemetry(migrated, retention_days=30, retention_delay_s=0.0, retention_interval_s=0.01)
        for _ in range(2)
    )
    first.start()
    second.start()
    try:
        assert wait_for(lambda: RequestRow.select().count() == 5, timeout=20)
        cutoff_ms = int((now - 30 * DAY_S) * 1000)
        for model in (HourlyRollup, HourlyAttemptRollup):
            old = model.select().where(model.hour_ms < cutoff_ms)
            assert wait_for(lambda old=old: not old.exists())
    finally:
        assert first.stop() and second.stop()
    assert first.failures == second.failures == 0, (first.last_error, second.last_error)
    assert {r.id for r in RequestRow.select()} == {r.id for r in recent}
    assert_rollups_equal_raw_rows()
    migrated.close()


def test_an_instance_skips_retention_while_another_holds_the_lock(
    migrated: peewee.Database, make_record: MakeRecord, request: pytest.FixtureRequest
) -> None:
    """On PostgreSQL, retention is claimed with an advisory lock: while another
    instance holds it (here: a plain connection in a transaction), this
    instance deletes nothing; once it is released, the next pass prunes."""
    if not is_postgres(migrated):
        pytest.skip("SQLite: one file is one host; its write lock already serializes retention")
    import psycopg

    now = time.time()
    loader = Telemetry(migrated, batch_interval_s=0.0, retention_days=0).start()
    for i in range(20):
        loader.submit(make_record(started_at=now - 40 * DAY_S + i))
    loader.submit(make_record(started_at=now))
    assert loader.stop()
    with psycopg.connect(str(request.getfixturevalue("postgres_url"))) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (RETENTION_LOCK_KEY,))
        telemetry = Telemetry(
            migrated, retention_days=30, retention_delay_s=0.0, retention_interval_s=0.05
        ).start()
        try:
            time.sleep(0.5)  # ten retention intervals
            assert RequestRow.select().count() == 21
            other.commit()  # the other instance's step ends: its lock goes with it
            assert wait_for(lambda: RequestRow.select().count() == 1)
        finally:
            assert telemetry.stop()
    assert telemetry.failures == 0
    migrated.close()
