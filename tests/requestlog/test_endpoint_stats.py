"""Stats per proxied route (chat, completions, embeddings), checked by brute force on both
databases, and migration 5 on a request log made by the previous release."""

from __future__ import annotations

import time

import peewee
import pytest

from chain429.requestlog import database as chain_database
from chain429.requestlog import listing, provider_stats, stats
from chain429.requestlog.database import MIGRATIONS, migrate
from chain429.requestlog.records import AttemptRecord, RequestRecord, new_request_id
from chain429.requestlog.tables import HourlyAttemptRollup, HourlyRollup, RequestRow
from chain429.requestlog.writer import Telemetry
from fixtures import stats_data
from fixtures.stats_data import DAY, HOUR, NOW_MS

HOUR_START = NOW_MS // HOUR * HOUR
RANGES = [
    pytest.param(NOW_MS - DAY, NOW_MS, id="24h"),
    pytest.param(NOW_MS - 30 * DAY, NOW_MS + DAY, id="30d"),
    pytest.param(HOUR_START - 5 * HOUR, HOUR_START, id="whole-hours-only"),
    pytest.param(NOW_MS - 20 * 60_000, NOW_MS, id="inside-one-hour"),
    pytest.param(NOW_MS - 3 * DAY - 1234, NOW_MS - 2 * DAY + 98765, id="unaligned-past"),
]
ENDPOINTS = ("chat", "completions", "embeddings")


@pytest.fixture(scope="module", params=stats_data.KINDS)
def dataset(request, tmp_path_factory):
    requests, attempts = stats_data.generate(count=1500, seed=17, endpoints=True)
    with stats_data.open_db(request.param, tmp_path_factory.mktemp("endpoints")) as db:
        stats_data.load(db, requests, attempts)
        yield stats_data.Dataset(db, requests, attempts)


@pytest.fixture
def bound(dataset):
    chain_database.bind(dataset.db)
    return dataset


def of(requests, endpoint):
    return [r for r in requests if r["endpoint"] == endpoint]


@pytest.mark.parametrize(("since", "until"), RANGES)
def test_endpoints_and_the_endpoint_filter_equal_brute_force(bound, since, until):
    rows = stats_data.in_range(bound.requests, since, until)
    listed = {row["endpoint"]: row for row in stats.endpoints(since, until)["data"]}
    assert set(listed) == {r["endpoint"] for r in rows}
    for endpoint in ENDPOINTS:
        mine = of(rows, endpoint)
        want = stats_data.totals(mine)
        summary = stats.summary(since, until, endpoint)
        assert summary["endpoint"] == endpoint
        for name in ("requests", "successes", "errors", "attempts", "tokens"):
            assert summary[name] == want[name], (endpoint, name)
        if mine:
            assert listed[endpoint]["requests"] == len(mine)
            assert listed[endpoint]["tokens"] == want["tokens"]
            assert listed[endpoint]["latency_ms"] == pytest.approx(
                stats_data.expected_latency(mine)
            )
        chains = {c["chain"]: c["requests"] for c in stats.chains(since, until, endpoint)["data"]}
        assert chains == {
            chain: sum(1 for r in mine if r["chain"] == chain)
            for chain in {r["chain"] for r in mine}
        }


@pytest.mark.parametrize(("since", "until"), RANGES)
def test_provider_attempts_per_endpoint_come_from_that_endpoints_trails(bound, since, until):
    for endpoint in ENDPOINTS:
        requests = of(bound.requests, endpoint)
        want = stats_data.attempt_outcomes(requests, bound.attempts, since, until)
        got = provider_stats.providers(since, until, endpoint)
        assert {p["provider"]: p["attempts"] for p in got["data"] if p["provider"] in want} == want
        answered = [r for r in stats_data.in_range(requests, since, until) if r["provider"]]
        counts = {p["provider"]: p["requests"] for p in got["data"] if p["provider"]}
        assert {k: v for k, v in counts.items() if v} == {
            name: sum(1 for r in answered if r["provider"] == name)
            for name in {r["provider"] for r in answered}
        }


def test_timeseries_and_the_request_list_filter_by_endpoint(bound):
    since, until = NOW_MS - 2 * DAY, NOW_MS
    for endpoint in ENDPOINTS:
        mine = of(stats_data.in_range(bound.requests, since, until), endpoint)
        series = stats.timeseries(since, until, "1h", endpoint)
        assert sum(point["requests"] for point in series["data"]) == len(mine)
        page = listing.requests(since, until, endpoint=endpoint, limit=50)
        assert page["data"] and {r["endpoint"] for r in page["data"]} == {endpoint}


# -- migration 5 ------------------------------------------------------------------

OLD_KEYS = {
    "hourly_rollup": ("hour_ms", "chain", "provider", "outcome"),
    "hourly_attempt_rollup": ("hour_ms", "provider", "model", "outcome"),
}


def previous_release(database: peewee.Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The schema the release before migration 5 left: no `endpoint` anywhere, the rollups
    unique on their old keys. Migrations 1-2 build today's tables, so undo what is new."""
    with monkeypatch.context() as before:
        before.setattr(chain_database, "MIGRATIONS", [m for m in MIGRATIONS if m[0] < 5])
        migrate(database)
    database.connect(reuse_if_open=True)
    for table, keys in OLD_KEYS.items():
        for index in database.get_indexes(table):
            if "endpoint" in index.columns:
                database.execute_sql(f'DROP INDEX "{index.name}"')
        database.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "endpoint"')
        if table == "hourly_rollup":  # nor the client, which came after (migration 7)
            database.execute_sql('ALTER TABLE "hourly_rollup" DROP COLUMN "client"')
        columns = ", ".join(f'"{c}"' for c in keys)
        name = "_".join([table, *keys])
        database.execute_sql(f'CREATE UNIQUE INDEX "{name}" ON "{table}" ({columns})')
    database.execute_sql('ALTER TABLE "requests" DROP COLUMN "endpoint"')


def record(endpoint: str, started_at: float) -> RequestRecord:
    return RequestRecord(
        new_request_id(),
        started_at,
        chain="main",
        endpoint=endpoint,
        provider="b",
        model="m",
        status=200,
        outcome="success",
        attempts=1,
        latency_ms=12.0,
        prompt_tokens=3,
        completion_tokens=0,
        total_tokens=3,
        trail=[AttemptRecord(1, "b", "m", "200", 200, 10.0)],
    )


def test_migration_5_on_a_previous_release_log(database, monkeypatch):
    previous_release(database, monkeypatch)
    hour = (int(time.time() * 1000) // HOUR - 3) * HOUR  # a whole hour, three hours ago
    old_id = new_request_id()
    database.execute_sql(
        'INSERT INTO "requests" (id, time_ms, chain, provider, model, status, outcome, '
        "latency_ms, stream, attempts, queued_ms, tokens_estimated) "
        f"VALUES ('{old_id}', {hour + 60_000}, 'main', 'b', 'm', 200, 'success', 12.0, false, "
        "1, 0.0, false)"
    )
    database.execute_sql(
        'INSERT INTO "hourly_rollup" (hour_ms, chain, provider, outcome, requests, errors, '
        "attempts, prompt_tokens, completion_tokens, latency_sum_ms, latency_histogram) "
        f"VALUES ({hour}, 'main', 'b', 'success', 1, 0, 1, 3, 0, 12.0, '[]')"
    )
    database.execute_sql(
        'INSERT INTO "hourly_attempt_rollup" (hour_ms, provider, model, outcome, count, '
        f"latency_sum_ms) VALUES ({hour}, 'b', 'm', '200', 1, 10.0)"
    )

    assert migrate(database) == [n for n, _, _ in MIGRATIONS if n >= 5]
    assert migrate(database) == []
    assert RequestRow.get_by_id(old_id).endpoint == "chat"  # the only route there was
    assert {r.endpoint for r in HourlyRollup.select()} == {"chat"}
    assert {r.endpoint for r in HourlyAttemptRollup.select()} == {"chat"}

    # The writer merges into the old rows (the new unique keys take its upserts).
    telemetry = Telemetry(database, batch_interval_s=0.01).start()
    started = (hour + 120_000) / 1000
    for endpoint in ("chat", "embeddings", "embeddings"):
        telemetry.submit(record(endpoint, started))
    assert telemetry.stop()
    rollup = {(r.endpoint, r.requests) for r in HourlyRollup.select()}
    assert rollup == {("chat", 2), ("embeddings", 2)}
    attempts = {(r.endpoint, r.count) for r in HourlyAttemptRollup.select()}
    assert attempts == {("chat", 2), ("embeddings", 2)}
    whole = (hour - HOUR, hour + 2 * HOUR)  # read from the rollups alone
    counts = {row["endpoint"]: row["requests"] for row in stats.endpoints(*whole)["data"]}
    assert counts == {"chat": 2, "embeddings": 2}
    assert stats.summary(*whole, "embeddings")["tokens"]["prompt"] == 6
    database.close()


def test_a_fresh_log_has_the_endpoint_keys_at_once(database):
    migrate(database)
    database.connect(reuse_if_open=True)
    for table, keys in OLD_KEYS.items():
        unique = [list(i.columns) for i in database.get_indexes(table) if i.unique]
        # The endpoint follows the old key (the rollup's client, migration 7, after it).
        assert any(u[: len(keys) + 1] == [*keys, "endpoint"] for u in unique)
        assert list(keys) not in unique
    database.close()
