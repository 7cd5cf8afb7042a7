"""What answers cost, in the request log: the writer's rows and spend rollup, read back
over any range; migration 6 on a previous release's log; the day's spend after a restart."""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx
import pytest

from chain429.config.model import Config
from chain429.fakes.provider import Reply
from chain429.requestlog import database as database_module
from chain429.requestlog import spend
from chain429.requestlog.database import MIGRATIONS, migrate, open_database
from chain429.requestlog.records import RequestRecord, new_request_id
from chain429.requestlog.tables import HourlySpendRollup, RequestRow, database_proxy
from chain429.requestlog.writer import Telemetry
from chain429.server.app import create_app
from chain429.server.serving import ServerThread
from fixtures import stats_data
from fixtures.servers import PROXY_KEY
from fixtures.spend import COST, HELLO, MAX_TOKENS, paid_answer, spend_config
from fixtures.stats_data import DAY, HOUR, NOW_MS

CLIENTS = ("ana", "ben", None)


@pytest.fixture(autouse=True)
def _restore_model_binding():
    saved = database_proxy.obj
    yield
    database_proxy.initialize(saved)


def priced_records(count: int, seed: int) -> list[RequestRecord]:
    """Requests over three days: some unpriced (no cost), some estimated, some with no client."""
    rng = random.Random(seed)
    records = []
    hour = NOW_MS // HOUR * HOUR
    times = [NOW_MS - rng.randrange(3 * DAY) for _ in range(count)] + [hour, hour - 1, NOW_MS - 1]
    for time_ms in times:
        priced = rng.random() < 0.8
        records.append(
            RequestRecord(
                new_request_id(),
                (time_ms + 0.5) / 1000,
                client=rng.choice(CLIENTS),
                chain=rng.choice(["fast", "smart"]),
                provider=rng.choice(["groq", "openai", "anthropic"]),
                model="m",
                status=200,
                outcome="success",
                prompt_tokens=rng.randint(1, 900),
                completion_tokens=rng.randint(1, 400),
                cost_usd=round(rng.uniform(0.0001, 0.05), 6) if priced else None,
                cost_estimated=rng.random() < 0.2,
            )
        )
    return records


def brute_force(records: list[RequestRecord], since: int, until: int, by: str) -> dict:
    groups: dict[str | None, list[float]] = {}
    for r in records:
        time_ms = int(r.started_at * 1000)
        if r.cost_usd is None or not since <= time_ms < until:
            continue
        group = groups.setdefault(getattr(r, by), [0, 0.0, 0.0])
        group[0] += 1
        group[1] += r.cost_usd
        group[2] += r.cost_usd if r.cost_estimated else 0.0
    return groups


@pytest.mark.parametrize("kind", stats_data.KINDS)
def test_spend_over_any_range_matches_the_rows_it_sums(kind, tmp_path):
    records = priced_records(800, seed=7)
    with stats_data.open_db(kind, tmp_path) as db:
        telemetry = Telemetry(db, retention_days=0, batch_rows=61).start()
        for record in records:
            assert telemetry.submit(record)
        assert telemetry.stop()
        assert HourlySpendRollup.select().count() > 0
        # A range of whole hours and ranges cut mid-hour at both ends (rollup + edges).
        ranges = [(NOW_MS - DAY, NOW_MS), (NOW_MS - 2 * DAY - 7, NOW_MS - HOUR + 3)]
        ranges.append((NOW_MS - 40 * 60_000, NOW_MS))  # inside one hour and a bit: raw only
        for since, until in ranges:
            for by in ("provider", "chain", "client"):
                want = brute_force(records, since, until, by)
                got = spend.spend(since, until, by)
                assert {r[by] for r in got["data"]} == set(want), (by, since)
                for row in got["data"]:
                    count, cost, estimated = want[row[by]]
                    assert row["requests"] == count
                    assert row["cost_usd"] == pytest.approx(cost)
                    assert row["estimated_usd"] == pytest.approx(estimated)
                assert got["cost_usd"] == pytest.approx(sum(g[1] for g in want.values()))
                costs = [row["cost_usd"] for row in got["data"]]
                assert costs == sorted(costs, reverse=True)  # the costliest first


def test_migration_6_adds_cost_to_a_previous_release_log(tmp_path, monkeypatch):
    database = open_database(f"sqlite:///{tmp_path / 'log.db'}")
    with monkeypatch.context() as previous_release:
        previous_release.setattr(database_module, "MIGRATIONS", MIGRATIONS[:5])
        assert migrate(database) == [1, 2, 3, 4, 5]
    # Migration 1 builds today's requests table; the previous release's had no cost.
    database.execute_sql('ALTER TABLE "requests" DROP COLUMN "cost_usd"')
    database.execute_sql('ALTER TABLE "requests" DROP COLUMN "cost_estimated"')
    database.execute_sql(
        'INSERT INTO "requests" (id, time_ms, chain, status, outcome, latency_ms, stream, '
        "attempts, queued_ms, tokens_estimated) "
        "VALUES ('old-row', 1, 'fast', 200, 'success', 1.0, false, 1, 0.0, false)"
    )
    assert 6 in migrate(database)
    old = RequestRow.get_by_id("old-row")
    assert (old.cost_usd, old.cost_estimated) == (None, False)
    telemetry = Telemetry(database, batch_interval_s=0.01).start()
    new = RequestRecord(new_request_id(), time.time(), chain="fast", status=200, outcome="success")
    new.cost_usd, new.cost_estimated = 0.25, True
    telemetry.submit(new)
    assert telemetry.stop()
    row = RequestRow.get_by_id(new.id)
    assert (row.cost_usd, row.cost_estimated) == (0.25, True)
    assert spend.spend(0, int(time.time() * 1000) + 1)["cost_usd"] == 0.25
    assert migrate(database) == []  # once only
    database.close()


def test_cost_keeps_its_digits_on_postgresql():
    if stats_data.skip_postgres():
        pytest.skip("CHAIN429_SKIP_POSTGRES=1")
    with stats_data._postgres_schema() as db:
        columns = {c.name: c.data_type for c in db.get_columns("requests")}
        assert columns["cost_usd"] == "double precision"  # REAL keeps 7 digits: not money


def start(config: Config, db_url: str) -> ServerThread:
    database = open_database(db_url)
    migrate(database)
    return ServerThread(create_app(config, telemetry=Telemetry(database))).start()


def spent_today(server: ServerThread) -> float:
    headers = {"authorization": f"Bearer {PROXY_KEY}"}
    response = httpx.get(f"{server.url}/v1/admin/budgets", headers=headers)
    (budget,) = response.json()["budgets"]
    return float(budget["spent_usd"])


def test_the_days_spend_survives_a_restart(fake, tmp_path: Path):
    free = fake("free", default=Reply.rate_limited(retry_after="300"))
    paid = fake("paid", default=paid_answer())
    config = Config.model_validate(spend_config(free, paid, 1.0))
    db_url = f"sqlite:///{tmp_path / 'log.db'}"
    headers = {"authorization": f"Bearer {PROXY_KEY}"}
    body = {"model": "main", "messages": HELLO, "max_tokens": MAX_TOKENS}
    first = start(config, db_url)
    try:
        for _ in range(3):
            reply = httpx.post(f"{first.url}/v1/chat/completions", json=body, headers=headers)
            assert reply.status_code == 200
        assert spent_today(first) == pytest.approx(3 * COST)
    finally:
        first.stop()
    second = start(config, db_url)
    try:
        assert spent_today(second) == pytest.approx(3 * COST)
    finally:
        second.stop()
