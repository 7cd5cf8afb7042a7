"""The writer thread: what goes in comes out as rows, rollups add up, old rows go, no blocking."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import peewee
import pytest

from chain429.requestlog import writer as telemetry_module
from chain429.requestlog.database import read_connection
from chain429.requestlog.records import AttemptRecord, RequestRecord
from chain429.requestlog.tables import (
    LATENCY_BUCKETS_MS,
    AttemptRow,
    HourlyAttemptRollup,
    HourlyRollup,
    RequestRow,
)
from chain429.requestlog.writer import HOUR_MS, Telemetry, latency_bucket
from fixtures.trails import logged_steps, step_values

MakeRecord = Callable[..., RequestRecord]
DAY_S = 86400


def writer(db: peewee.Database, **kwargs: Any) -> Telemetry:
    kwargs.setdefault("batch_interval_s", 0.01)
    kwargs.setdefault("retention_days", 0)
    return Telemetry(db, **kwargs)


def test_records_round_trip_with_their_trails(
    migrated: peewee.Database, make_record: MakeRecord
) -> None:
    full = make_record(stream=True, ttft_ms=55.25, queued_ms=12.5, tokens_estimated=True)
    bare = make_record(
        key_label=None,
        chain=None,
        requested_model=None,
        provider=None,
        model=None,
        status=503,
        outcome="all_providers_exhausted",
        attempts=0,
        latency_ms=0.0,
        prompt_tokens=None,
        completion_tokens=None,
        total_tokens=None,
        trail=[AttemptRecord(1, "groq", "llama", "skip:cooldown", cooldown_ms=None)],
    )
    telemetry = writer(migrated).start()
    assert telemetry.submit(full) and telemetry.submit(bare)
    assert telemetry.stop()
    assert telemetry.written == 2

    # Every record field but the id, the time and the trail is a column of the same name.
    request_fields = [f.name for f in dataclasses.fields(RequestRecord)][2:]
    request_fields = [n for n in request_fields if n not in ("trail", "leading_skips")]
    attempt_fields = [f.name for f in dataclasses.fields(AttemptRecord)]
    assert "key_label" in request_fields and "tokens_estimated" in request_fields
    for record in (full, bare):
        row = RequestRow.get_by_id(record.id)
        assert row.time_ms == int(record.started_at * 1000)
        assert {n: getattr(row, n) for n in request_fields} == {
            n: getattr(record, n) for n in request_fields
        }
        stored = [step_values(step, attempt_fields) for _, _, step in logged_steps(record.id)]
        assert stored == [step_values(a, attempt_fields) for a in record.trail]
    migrated.close()


def test_concurrent_submitters_lose_nothing(
    migrated: peewee.Database, make_record: MakeRecord
) -> None:
    telemetry = writer(migrated, buffer_size=10000, batch_rows=500).start()
    refused = []

    def submit_many() -> None:
        for _ in range(250):
            if not telemetry.submit(make_record()):
                refused.append(1)

    threads = [threading.Thread(target=submit_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert telemetry.stop()
    assert telemetry.dropped == len(refused) == 0
    assert telemetry.written == 2000
    assert RequestRow.select().count() == 2000
    assert len(logged_steps()) == 2000 * 3
    assert HourlyRollup.select(peewee.fn.SUM(HourlyRollup.requests)).scalar() == 2000
    migrated.close()


def test_full_queue_drops_and_never_blocks(
    migrated: peewee.Database, make_record: MakeRecord
) -> None:
    telemetry = writer(migrated, buffer_size=3)  # not started: nothing drains the buffer
    started = time.perf_counter()
    accepted = [telemetry.submit(make_record()) for _ in range(10)]
    assert time.perf_counter() - started < 0.5
    assert accepted == [True] * 3 + [False] * 7
    assert telemetry.dropped == 7 and telemetry.pending == 3
    assert telemetry.dropped_by_reason == {"full": 7, "rejected": 0, "shutdown": 0}
    assert telemetry.stop()  # what was accepted is still written
    assert RequestRow.select().count() == 3
    assert not telemetry.submit(make_record()) and telemetry.dropped == 8
    migrated.close()


def test_stop_flushes_everything_queued(migrated: peewee.Database, make_record: MakeRecord) -> None:
    telemetry = writer(migrated, batch_rows=100, batch_interval_s=5.0).start()
    for _ in range(750):
        assert telemetry.submit(make_record())
    started = time.perf_counter()
    assert telemetry.stop()
    assert time.perf_counter() - started < 5.0  # stop does not wait out the batch interval
    assert RequestRow.select().count() == 750 == telemetry.written
    assert telemetry.stop()  # idempotent
    migrated.close()


def test_hourly_rollup_matches_raw_rows(migrated: peewee.Database, make_record: MakeRecord) -> None:
    hour_start = (int(time.time() * 1000) // HOUR_MS - 1) * HOUR_MS / 1000
    latencies = [0.5, 5, 5.01, 99, 250, 999.9, 4000, 30000, 200000]
    records = []
    for i in range(120):
        chain, provider = ("main", "groq") if i % 3 else ("fast", None)
        status, outcome = (200, "success") if i % 4 else (429, "all_providers_exhausted")
        if i % 11 == 0:
            status, outcome = 200, "stream_interrupted"  # an error although the status was 200
        records.append(
            make_record(
                started_at=hour_start + (i % 2) * 3600 + i,  # two consecutive hours
                chain=chain,
                provider=provider,
                status=status,
                outcome=outcome,
                attempts=i % 4,
                latency_ms=latencies[i % len(latencies)],
                prompt_tokens=None if i % 5 == 0 else i,
                completion_tokens=i % 7,
            )
        )
    telemetry = writer(migrated).start()
    for record in records[:50]:  # two flushes: the second merges into existing rows
        telemetry.submit(record)
    assert telemetry.flush(5)
    for record in records[50:]:
        telemetry.submit(record)
    assert telemetry.stop()

    sums = [
        "requests",
        "errors",
        "attempts",
        "prompt_tokens",
        "completion_tokens",
        "latency_sum_ms",
    ]
    expected: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(
        lambda: dict.fromkeys(sums, 0) | {"histogram": [0] * (len(LATENCY_BUCKETS_MS) + 1)}
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

    rollups = {(r.hour_ms, r.chain, r.provider, r.outcome): r for r in HourlyRollup.select()}
    assert set(rollups) == set(expected) and len({k[0] for k in rollups}) == 2
    for key, totals in expected.items():
        row = rollups[key]
        histogram = json.loads(row.latency_histogram)
        assert histogram == totals["histogram"] and sum(histogram) == row.requests
        assert row.latency_sum_ms == pytest.approx(totals["latency_sum_ms"])
        for name in ("requests", "errors", "attempts", "prompt_tokens", "completion_tokens"):
            assert getattr(row, name) == totals[name], (key, name)
    assert sum(r.errors for r in rollups.values()) > 0
    migrated.close()


def expected_attempt_rollup() -> dict[tuple[Any, ...], list[Any]]:
    """[count, latency sum] per (hour of the request, provider, model, outcome), from raw rows."""
    expected: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0.0])
    for _, time_ms, a in logged_steps():
        hour = time_ms // HOUR_MS * HOUR_MS
        totals = expected[(hour, a.provider, a.model, a.outcome)]
        totals[0] += 1
        totals[1] += a.latency_ms or 0.0
    return dict(expected)


def stored_attempt_rollup() -> dict[tuple[Any, ...], list[Any]]:
    """[count, latency sum] per (hour, provider, model, outcome), over every endpoint."""
    stored: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0.0])
    for r in HourlyAttemptRollup.select():
        totals = stored[(r.hour_ms, r.provider, r.model, r.outcome)]
        totals[0] += r.count
        totals[1] += r.latency_sum_ms
    return dict(stored)


def assert_attempt_rollup_matches_trails() -> None:
    expected = expected_attempt_rollup()
    stored = stored_attempt_rollup()
    assert set(stored) == set(expected)
    for key, (count, latency_sum) in expected.items():
        assert stored[key][0] == count, key
        assert stored[key][1] == pytest.approx(latency_sum), key


def test_records_sharing_their_leading_skips_log_and_count_every_step(
    migrated: peewee.Database, make_record: MakeRecord
) -> None:
    """Requests that took the same known skips (one shared tuple, `leading_skips`) across
    two hours and two endpoints: each logged trail is whole, the rollup counts each skip."""
    known = (
        AttemptRecord(1, "cerebras", "llama", "skip:limited", reason="requestsPerDay 1 reached"),
        AttemptRecord(2, "mistral", "small", "skip:cooldown", reason="rate limited"),
    )
    other = (AttemptRecord(1, "cerebras", "llama", "skip:paused", reason="paused by admin#1"),)
    hour_start = (int(time.time() * 1000) // HOUR_MS - 1) * HOUR_MS / 1000
    records = []
    for i in range(60):
        leading = known if i % 3 else other
        rest = [
            AttemptRecord(len(leading) + 1, "openrouter", "llama", "skip:tokens", reason="full"),
            AttemptRecord(len(leading) + 2, "groq", "llama", "200", 200, 40.5),
        ][i % 2 :]
        for n, step in enumerate(rest, len(leading) + 1):
            step.order = n
        record = make_record(
            started_at=hour_start + (i % 2) * 3600 + i,
            endpoint="chat" if i % 4 else "completions",
            trail=[*leading, *rest],
        )
        record.leading_skips = leading
        records.append(record)
    telemetry = writer(migrated, batch_rows=25).start()
    for record in records:
        telemetry.submit(record)
    assert telemetry.stop()
    for record in records:
        logged = [(s.order, s.provider, s.outcome) for _, _, s in logged_steps(record.id)]
        assert logged == [(a.order, a.provider, a.outcome) for a in record.trail]
    assert_attempt_rollup_matches_trails()
    skips = {k: c for k, (c, _) in stored_attempt_rollup().items() if k[3].startswith("skip:")}
    assert sum(skips.values()) == 40 * 2 + 20 + 30  # known, other, the skip:tokens after
    migrated.close()


def test_attempt_rollup_matches_raw_trails(
    migrated: peewee.Database, make_record: MakeRecord
) -> None:
    hour_start = (int(time.time() * 1000) // HOUR_MS - 1) * HOUR_MS / 1000
    tokens = ["200", "429", "timeout", "skip:cooldown", "500"]
    records = []
    for i in range(150):
        trail = [
            AttemptRecord(
                n,
                ("groq", "cerebras", "openrouter")[(i + n) % 3],
                ("llama", "qwen")[(i * n) % 2],
                token,
                None if token.startswith("skip:") else 200,
                None if token.startswith("skip:") else float(i % 17) + 0.25,
            )
            for n, token in enumerate(tokens[i % 4 : i % 4 + i % 3 + 1], 1)
        ]
        # The last request of an hour starts at xx:59:59.9 and its trail runs into
        # the next hour: its attempts stay in the request's hour.
        started = hour_start + (i % 2) * 3600 + (3599.9 if i == 149 else i)
        records.append(make_record(started_at=started, trail=trail))
    records.append(make_record(trail=[]))  # no trail: nothing to add
    telemetry = writer(migrated).start()
    for record in records[:60]:  # two flushes: the second merges into existing rows
        telemetry.submit(record)
    assert telemetry.flush(5)
    for record in records[60:]:
        telemetry.submit(record)
    assert telemetry.stop()
    assert_attempt_rollup_matches_trails()
    stored = stored_attempt_rollup()
    assert len({key[0] for key in stored}) == 2
    assert {key[3] for key in stored} == set(tokens)
    assert sum(count for count, _ in stored.values()) == len(logged_steps()) > 150
    migrated.close()


def test_two_writers_on_one_database_merge_both_rollups_exactly(
    migrated: peewee.Database, make_record: MakeRecord
) -> None:
    """Two writers, each on its own connection, as two chain429 instances sharing one
    database: concurrent batches hit the same rollup rows and none of their counts is lost."""
    now = time.time()
    first, second = writer(migrated, batch_rows=25), writer(migrated, batch_rows=25)
    first.start()
    second.start()
    try:
        for i in range(400):
            record = make_record(started_at=now - (i % 3) * 3600)
            assert (first if i % 2 else second).submit(record)
    finally:
        assert first.stop() and second.stop()
    assert first.written + second.written == 400 and first.dropped == second.dropped == 0
    assert HourlyRollup.select(peewee.fn.SUM(HourlyRollup.requests)).scalar() == 400
    assert_attempt_rollup_matches_trails()
    assert HourlyAttemptRollup.select(peewee.fn.SUM(HourlyAttemptRollup.count)).scalar() == 1200
    migrated.close()


def test_latency_buckets_are_upper_bounds() -> None:
    assert latency_bucket(0) == 0 and latency_bucket(5) == 0 and latency_bucket(5.001) == 1
    assert latency_bucket(LATENCY_BUCKETS_MS[-1]) == len(LATENCY_BUCKETS_MS) - 1
    assert latency_bucket(LATENCY_BUCKETS_MS[-1] + 1) == len(LATENCY_BUCKETS_MS)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_retention_prunes_old_rows_in_small_steps(
    migrated: peewee.Database, make_record: MakeRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry_module, "_RETENTION_BATCH", 7)  # several steps for 40 rows
    now = time.time()
    old = [make_record(started_at=now - 40 * DAY_S + i, chain="old") for i in range(40)]
    recent = [make_record(started_at=now - 29 * DAY_S), make_record(started_at=now)]
    telemetry = writer(
        migrated, retention_days=30, retention_delay_s=0.0, retention_interval_s=0.05
    )
    for record in old + recent:
        telemetry.submit(record)
    telemetry.start()
    try:
        assert telemetry.flush(5)
        assert wait_for(lambda: RequestRow.select().count() == 2)
        assert wait_for(
            lambda: not HourlyRollup.select().where(HourlyRollup.chain == "old").exists()
        )
        assert wait_for(
            lambda: (
                HourlyAttemptRollup.select(peewee.fn.SUM(HourlyAttemptRollup.count)).scalar()
                == 2 * 3
            )
        )
    finally:
        assert telemetry.stop()
    assert {r.id for r in RequestRow.select()} == {r.id for r in recent}
    assert len(logged_steps()) == 2 * 3  # the old trails went with their requests
    assert AttemptRow.select().count() == 2 * 2  # calls only: no row left of an old request
    assert HourlyRollup.select(peewee.fn.SUM(HourlyRollup.requests)).scalar() == 2
    assert_attempt_rollup_matches_trails()  # and so did their hours in the attempt rollup
    migrated.close()


def test_retention_zero_keeps_everything(
    migrated: peewee.Database, make_record: MakeRecord
) -> None:
    telemetry = writer(migrated, retention_days=0, retention_delay_s=0.0, retention_interval_s=0.01)
    telemetry.submit(make_record(started_at=0.0))  # 1970
    telemetry.start()
    time.sleep(0.1)  # several retention intervals
    assert telemetry.stop()
    assert RequestRow.select().count() == 1 and HourlyRollup.select().count() == 1
    assert HourlyAttemptRollup.select().count() == 3
    migrated.close()


def test_a_bad_record_costs_only_itself(migrated: peewee.Database, make_record: MakeRecord) -> None:
    twin = make_record()
    batch = [make_record() for _ in range(5)] + [twin, twin] + [make_record() for _ in range(5)]
    telemetry = writer(migrated, batch_rows=500)
    for record in batch:  # queued before start: they land in one batch
        telemetry.submit(record)
    telemetry.start()
    assert telemetry.flush(5)
    assert (telemetry.written, telemetry.dropped_by_reason["rejected"]) == (11, 1)
    assert telemetry.dropped == 1 and telemetry.pending == 0
    assert telemetry.last_error and telemetry.failures >= 2
    assert telemetry.submit(make_record())  # the writer is still alive
    assert telemetry.stop()
    assert RequestRow.select().count() == 12 == telemetry.written
    assert HourlyRollup.select(peewee.fn.SUM(HourlyRollup.requests)).scalar() == 12
    assert_attempt_rollup_matches_trails()  # the twin's second trail is not counted
    assert HourlyAttemptRollup.select(peewee.fn.SUM(HourlyAttemptRollup.count)).scalar() == 12 * 3
    migrated.close()


def test_overlong_strings_are_clipped_not_fatal(
    migrated: peewee.Database, make_record: MakeRecord
) -> None:
    long = "x" * 1000
    record = make_record(
        chain=long, model=long, trail=[AttemptRecord(1, long, long, "200", 200, 1.0)]
    )
    telemetry = writer(migrated).start()
    telemetry.submit(record)
    assert telemetry.stop()
    assert telemetry.dropped == 0
    row = RequestRow.get_by_id(record.id)
    assert row.chain == "x" * 200 and row.model == "x" * 200
    assert HourlyRollup.get().chain == "x" * 200
    stored = HourlyAttemptRollup.get()
    assert (stored.provider, stored.model, stored.count) == ("x" * 200, "x" * 200, 1)
    migrated.close()


def test_readers_in_other_threads_while_the_writer_writes(
    migrated: peewee.Database, make_record: MakeRecord
) -> None:
    telemetry = writer(migrated, batch_rows=50).start()
    seen: list[list[int]] = [[], []]
    errors: list[BaseException] = []
    done = threading.Event()

    def read(counts: list[int]) -> None:
        try:
            while not done.is_set():
                with read_connection(migrated):
                    counts.append(RequestRow.select().count())
                    # One snapshot: every request counted has its whole trail, no more.
                    assert len(logged_steps()) == counts[-1] * 3
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    readers = [threading.Thread(target=read, args=(counts,)) for counts in seen]
    for reader in readers:
        reader.start()
    for _ in range(600):
        telemetry.submit(make_record())
        time.sleep(0.0002)  # spread the writes so reads interleave with batches
    assert telemetry.stop()
    done.set()
    for reader in readers:
        reader.join()
    assert not errors
    for counts in seen:  # each reader saw the log grow, never shrink or tear
        assert len(counts) > 2 and counts == sorted(counts)
    assert len({c for counts in seen for c in counts}) > 2  # reads overlapped writes
    assert RequestRow.select().count() == 600
    migrated.close()


def test_over_long_names_are_cut_to_their_columns_and_rollups_still_match(
    migrated: peewee.Database,
) -> None:
    """A 300-character model name fits nowhere: the row, the trail and both rollups keep
    its first 200 characters, and the records around it are written too."""
    long_model = "m" * 300
    near = "n" * 200 + "-a"  # two names that differ only after the cut
    other = "n" * 200 + "-b"
    now = time.time()
    records = []
    for i, model in enumerate([long_model, near, other, "short"]):
        record = RequestRecord(
            f"req_long_{i}",
            now,
            chain="c" * 250,
            provider="p",
            model=model,
            status=200,
            outcome="success",
            attempts=1,
            latency_ms=5.0,
        )
        record.trail = [
            AttemptRecord(1, "p", model, "skip:limited", reason="requestsPerDay 1 reached"),
            AttemptRecord(2, "p", model, "200", 200, 5.0),
        ]
        records.append(record)
    telemetry = Telemetry(migrated, batch_interval_s=0.01).start()
    for record in records:
        telemetry.submit(record)
    assert telemetry.stop()

    rows = {row.id: row for row in RequestRow.select()}
    assert len(rows) == 4
    assert rows["req_long_0"].model == "m" * 200 and rows["req_long_0"].chain == "c" * 200
    assert rows["req_long_3"].model == "short"
    trail_models = sorted(step.model for _, _, step in logged_steps())
    assert trail_models == sorted(2 * ["m" * 200, "n" * 200, "n" * 200, "short"])
    # The attempt rollup groups by the cut names, exactly as the trails read (skips too).
    rolled = {(r.model, r.outcome): r.count for r in HourlyAttemptRollup.select()}
    assert rolled == {
        (model, outcome): count
        for model, count in {"m" * 200: 1, "n" * 200: 2, "short": 1}.items()
        for outcome in ("200", "skip:limited")
    }
    assert HourlyRollup.select(peewee.fn.SUM(HourlyRollup.requests)).scalar() == 4
    assert {r.chain for r in HourlyRollup.select()} == {"c" * 200}
