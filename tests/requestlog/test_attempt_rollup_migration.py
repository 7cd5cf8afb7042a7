"""Migration 2 on a request log that already ran migration 1: the attempt rollup is
created and filled from the trails already logged, so `providers` stays exact."""

from __future__ import annotations

import pytest

from chain429.requestlog import database as chain_database
from chain429.requestlog import provider_stats
from chain429.requestlog.tables import HourlyAttemptRollup, SchemaMigration
from fixtures import stats_data
from fixtures.stats_data import DAY, HOUR, NOW_MS

HOUR_START = NOW_MS // HOUR * HOUR
KEY = ("hour_ms", "provider", "model", "outcome")


def stored_attempt_rollup() -> dict[tuple, tuple[int, float]]:
    return {
        tuple(getattr(row, k) for k in KEY): (row.count, row.latency_sum_ms)
        for row in HourlyAttemptRollup.select()
    }


@pytest.mark.parametrize("kind", stats_data.KINDS)
def test_migration_2_backfills_the_attempt_rollup(kind, tmp_path, monkeypatch):
    requests, attempts = stats_data.generate(count=800, seed=7)
    with monkeypatch.context() as previous_release:
        previous_release.setattr(chain_database, "MIGRATIONS", chain_database.MIGRATIONS[:1])
        with stats_data.open_db(kind, tmp_path) as db:  # migrated as the previous release did
            previous_release.undo()  # this release from here on
            assert HourlyAttemptRollup._meta.table_name not in db.get_tables()
            stats_data.load(db, requests, attempts, attempt_rollup=False)

            assert chain_database.migrate(db) == [n for n, _, _ in chain_database.MIGRATIONS[1:]]
            assert chain_database.migrate(db) == []
            chain_database.bind(db)

            want = {
                tuple(row[k] for k in KEY): (row["count"], row["latency_sum_ms"])
                for row in stats_data.attempt_rollup_rows(requests, attempts)
            }
            got = stored_attempt_rollup()
            assert set(got) == set(want)
            for key, (count, latency_sum) in want.items():
                assert got[key][0] == count, key
                assert got[key][1] == pytest.approx(latency_sum), key

            for since, until in [
                (NOW_MS - DAY, NOW_MS),
                (NOW_MS - 30 * DAY, NOW_MS + DAY),
                (HOUR_START - 5 * HOUR, HOUR_START),
                (NOW_MS - 3 * DAY - 1234, NOW_MS - 2 * DAY + 98765),
            ]:
                want_attempts = stats_data.attempt_outcomes(requests, attempts, since, until)
                data = provider_stats.providers(since, until)["data"]
                got_attempts = {p["provider"]: p["attempts"] for p in data if p["provider"]}
                assert got_attempts == want_attempts


@pytest.mark.parametrize("kind", stats_data.KINDS)
def test_a_fresh_database_gets_every_migration_and_an_empty_attempt_rollup(kind, tmp_path):
    with stats_data.open_db(kind, tmp_path) as db:
        numbers = [m.number for m in SchemaMigration.select()]
        assert numbers == [n for n, _, _ in chain_database.MIGRATIONS]
        assert numbers[:3] == [1, 2, 3]
        assert HourlyAttemptRollup._meta.table_name in db.get_tables()
        assert HourlyAttemptRollup.select().count() == 0
