"""Opening the request log from a URL, migrating it, and keeping passwords out of messages.

The database fixtures (SQLite and PostgreSQL) are this folder's conftest.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import peewee
import pytest

from chain429.requestlog import database as database_module
from chain429.requestlog import listing, provider_stats
from chain429.requestlog.database import (
    MIGRATIONS,
    bind,
    mask_url,
    migrate,
    open_database,
    read_connection,
    scrub,
)
from chain429.requestlog.records import AttemptRecord, RequestRecord, new_request_id
from chain429.requestlog.tables import (
    ALL_MODELS,
    AttemptRow,
    HourlyRollup,
    RequestRow,
    SchemaMigration,
    database_proxy,
)
from chain429.requestlog.writer import Telemetry

SECRET = "hunter2-s3cret"

# ------------------------------------------------------------------ migrations


def test_migrations_apply_once_and_are_recorded(database: peewee.Database) -> None:
    assert migrate(database) == [number for number, _, _ in MIGRATIONS]
    tables = set(database.get_tables())
    assert {model._meta.table_name for model in ALL_MODELS} <= tables
    ledger = [(m.number, m.name, m.applied_ms) for m in SchemaMigration.select()]
    assert [(n, name) for n, name, _ in ledger] == [(n, name) for n, name, _ in MIGRATIONS]

    assert migrate(database) == []  # second start: nothing to do, nothing rewritten
    assert [(m.number, m.name, m.applied_ms) for m in SchemaMigration.select()] == ledger
    database.close()


def test_migration_3_adds_the_route_to_a_previous_release_log(
    database: peewee.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as previous_release:
        previous_release.setattr(database_module, "MIGRATIONS", MIGRATIONS[:2])
        assert migrate(database) == [1, 2]
    # Migration 1 builds today's table; the previous release's had no route.
    database.execute_sql('ALTER TABLE "requests" DROP COLUMN "route"')
    old = RequestRecord(new_request_id(), time.time(), chain="fast", status=200, outcome="success")
    database.execute_sql(
        'INSERT INTO "requests" (id, time_ms, chain, status, outcome, latency_ms, stream, '
        "attempts, queued_ms, tokens_estimated) "
        f"VALUES ('{old.id}', 1, 'fast', 200, 'success', 1.0, false, 1, 0.0, false)"
    )
    assert migrate(database) == [number for number, _, _ in MIGRATIONS[2:]]
    assert RequestRow.get_by_id(old.id).route is None
    telemetry = Telemetry(database, batch_interval_s=0.01).start()
    new = RequestRecord(new_request_id(), time.time(), chain="fast", route="default", status=200)
    telemetry.submit(new)
    assert telemetry.stop()
    assert RequestRow.get_by_id(new.id).route == "default"
    database.close()


def test_migration_4_adds_the_client_to_a_previous_release_log(
    database: peewee.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as previous_release:
        previous_release.setattr(database_module, "MIGRATIONS", MIGRATIONS[:3])
        assert migrate(database) == [1, 2, 3]
    # Migration 1 builds today's table; the previous release's had no client.
    database.execute_sql('DROP INDEX "requests_client_time_ms"')
    database.execute_sql('ALTER TABLE "requests" DROP COLUMN "client"')
    database.execute_sql(
        'INSERT INTO "requests" (id, time_ms, chain, status, outcome, latency_ms, stream, '
        "attempts, queued_ms, tokens_estimated) "
        "VALUES ('old-row', 1, 'fast', 200, 'success', 1.0, false, 1, 0.0, false)"
    )
    assert migrate(database) == [number for number, _, _ in MIGRATIONS[3:]]
    assert RequestRow.get_by_id("old-row").client is None
    assert "requests_client_time_ms" in {i.name for i in database.get_indexes("requests")}
    telemetry = Telemetry(database, batch_interval_s=0.01).start()
    new = RequestRecord(new_request_id(), time.time(), chain="fast", client="ana", status=200)
    telemetry.submit(new)
    assert telemetry.stop()
    assert RequestRow.get_by_id(new.id).client == "ana"
    database.close()


def test_migration_8_keeps_old_skip_rows_and_writes_new_skips_in_the_request_row(
    database: peewee.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A previous release's log (a row per skip in `attempts`) gains `requests.skips`; its
    trails read as before, the new ones' skips go in the column, stats count both."""
    with monkeypatch.context() as previous_release:
        previous_release.setattr(database_module, "MIGRATIONS", MIGRATIONS[:7])
        assert migrate(database) == [1, 2, 3, 4, 5, 6, 7]
    # Migration 1 builds today's table; the previous release's had no skips.
    database.execute_sql('ALTER TABLE "requests" DROP COLUMN "skips"')
    now_ms = int(time.time() * 1000)
    database.execute_sql(
        'INSERT INTO "requests" (id, time_ms, chain, provider, status, outcome, latency_ms, '
        "stream, attempts, queued_ms, tokens_estimated, endpoint, cost_estimated) "
        f"VALUES ('old-row', {now_ms}, 'fast', 'groq', 200, 'success', 1.0, false, 1, "
        "0.0, false, 'chat', false)"
    )
    database.execute_sql(
        'INSERT INTO "attempts" (request_id, position, provider, model, outcome, reason) '
        "VALUES ('old-row', 1, 'cerebras', 'llama', 'skip:cooldown', 'cooling down'), "
        "('old-row', 2, 'groq', 'llama', '200', '')"
    )
    assert migrate(database) == [8]
    telemetry = Telemetry(database, batch_interval_s=0.01).start()
    new = RequestRecord(new_request_id(), time.time(), chain="fast", provider="groq", status=200)
    new.trail = [
        AttemptRecord(1, "cerebras", "llama", "skip:cooldown", reason="cooling down"),
        AttemptRecord(2, "mistral", "small", "skip:limited", reason="requestsPerDay 1 reached"),
        AttemptRecord(3, "groq", "llama", "200", 200, 4.0),
    ]
    telemetry.submit(new)
    assert telemetry.stop()
    bind(database)
    assert AttemptRow.select().where(AttemptRow.request == new.id).count() == 1  # the call
    old_trail = listing.request_detail("old-row")["trail"]
    assert [(s["provider"], s["outcome"]) for s in old_trail] == [
        ("cerebras", "skip:cooldown"),
        ("groq", "200"),
    ]
    new_trail = listing.request_detail(new.id)["trail"]
    assert [(s["order"], s["outcome"], s["reason"]) for s in new_trail] == [
        (1, "skip:cooldown", "cooling down"),
        (2, "skip:limited", "requestsPerDay 1 reached"),
        (3, "200", ""),
    ]
    # Inside the current hour: the raw edge, read from both shapes.
    attempts = {
        p["provider"]: p["attempts"]
        for p in provider_stats.providers(now_ms - 60_000, now_ms + 60_000)["data"]
    }
    assert attempts["cerebras"]["outcomes"] == {"skip:cooldown": 2}
    assert attempts["mistral"]["skips"] == 1
    assert attempts["groq"]["calls"] == 2
    database.close()


def test_migration_7_gives_the_rollup_its_client_dimension(
    database: peewee.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as previous_release:
        previous_release.setattr(database_module, "MIGRATIONS", MIGRATIONS[:6])
        assert migrate(database) == [1, 2, 3, 4, 5, 6]
    # Migration 1 builds today's table; the previous release's rollup had no client.
    database.execute_sql(
        'DROP INDEX "hourly_rollup_hour_ms_chain_provider_outcome_endpoint_client"'
    )
    database.execute_sql('ALTER TABLE "hourly_rollup" DROP COLUMN "client"')
    database.execute_sql(
        'CREATE UNIQUE INDEX "hourly_rollup_hour_ms_chain_provider_outcome_endpoint" '
        'ON "hourly_rollup" ("hour_ms", "chain", "provider", "outcome", "endpoint")'
    )
    hour = int(time.time()) // 3600 * 3_600_000
    database.execute_sql(
        'INSERT INTO "hourly_rollup" (hour_ms, chain, provider, outcome, requests, errors, '
        "attempts, prompt_tokens, completion_tokens, latency_sum_ms, latency_histogram) "
        f"VALUES ({hour}, 'fast', 'groq', 'success', 3, 0, 3, 0, 0, 3.0, '[]')"
    )
    assert migrate(database) == [number for number, _, _ in MIGRATIONS[6:]]
    indexes = {i.name: i for i in database.get_indexes("hourly_rollup")}
    assert "hourly_rollup_hour_ms_chain_provider_outcome_endpoint" not in indexes
    assert indexes["hourly_rollup_hour_ms_chain_provider_outcome_endpoint_client"].unique
    telemetry = Telemetry(database, batch_interval_s=0.01).start()
    for client in ("ana", None):
        telemetry.submit(
            RequestRecord(
                new_request_id(),
                time.time(),
                chain="fast",
                provider="groq",
                client=client,
                status=200,
                outcome="success",
                attempts=1,
                latency_ms=1.0,
            )
        )
    assert telemetry.stop()
    rows = {
        row.client: row.requests
        for row in HourlyRollup.select().where(HourlyRollup.hour_ms == hour)
    }
    assert rows == {"": 4, "ana": 1}  # the old row is anonymous; the new one added to it
    database.close()


def test_migration_numbers_only_grow() -> None:
    numbers = [number for number, _, _ in MIGRATIONS]
    assert numbers == sorted(set(numbers)) and numbers[0] == 1


# ------------------------------------------------------------------ URLs


def test_sqlite_urls_relative_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_database("sqlite:///logs/rel.db")
    assert relative.database == "logs/rel.db" and (tmp_path / "logs").is_dir()
    absolute = open_database(f"sqlite:///{tmp_path / 'abs.db'}")  # four slashes
    assert absolute.database == str(tmp_path / "abs.db")
    assert database_proxy.obj is absolute


def test_db_path_and_default_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = open_database(None, db_path=str(tmp_path / "from-429chain.db"))
    assert db.database == str(tmp_path / "from-429chain.db")
    monkeypatch.setenv("CHAIN429_HOME", str(tmp_path / "home"))
    db = open_database(None)
    assert db.database == str(tmp_path / "home" / "chain429.db")
    assert (tmp_path / "home").is_dir()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'p.db'}")
    with db.connection_context():
        pragma = {
            name: db.execute_sql(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
        }
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 1,
        "busy_timeout": 5000,
        "foreign_keys": 1,
    }


def test_postgres_url_parts() -> None:
    db = open_database(f"postgres://bob:{SECRET}%40x@db.example:6543/log?sslmode=require")
    assert isinstance(db, peewee.PostgresqlDatabase)
    assert db.database == "log"
    params = db.connect_params
    assert params["user"] == "bob" and params["password"] == f"{SECRET}@x"
    assert (params["host"], params["port"], params["sslmode"]) == ("db.example", 6543, "require")
    assert params["connect_timeout"] == 5  # an unreachable server must not hang a thread
    assert SECRET not in database_module.describe(db)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        (f"mysql://root:{SECRET}@localhost/log", "'mysql'"),
        (f"redis://:{SECRET}@localhost:6379/0", "'redis'"),
        ("just/a/path.db", "no scheme"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite://", "needs a file"),
        (f"postgresql://bob:{SECRET}@localhost:5432/", "database name"),
        (f"postgresql://bob:{SECRET}@localhost:99999/log", "bad port"),
    ],
)
def test_bad_urls_are_clear_and_masked(url: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as excinfo:
        open_database(url)
    assert SECRET not in str(excinfo.value)


def test_mask_url_and_scrub() -> None:
    assert mask_url(f"postgresql://bob:{SECRET}@h:5432/db") == "postgresql://bob:***@h:5432/db"
    assert mask_url("postgresql://bob@h/db") == "postgresql://bob@h/db"
    assert mask_url(f"postgresql://u:p@ss{SECRET}@h/db") == "postgresql://u:***@h/db"
    assert (
        mask_url(f"postgresql://h/db?password={SECRET}&x=1") == "postgresql://h/db?password=***&x=1"
    )
    text = scrub(f"failed: host=h password='{SECRET}' dbname=x, also redis://:{SECRET}@r/0")
    assert SECRET not in text and "password=***" in text and "redis://:***@r/0" in text


def test_unreachable_server_error_hides_password(caplog: pytest.LogCaptureFixture) -> None:
    url = f"postgresql://bob:{SECRET}@127.0.0.1:1/log"  # port 1: refused at once
    db = open_database(url)
    with pytest.raises(peewee.OperationalError) as excinfo:
        migrate(db)
    assert SECRET not in str(excinfo.value)
    assert "postgresql://bob:***@127.0.0.1:1/log" in str(excinfo.value)

    # The writer keeps the record and retries while the database is down, and says
    # so without the password.
    caplog.set_level(logging.WARNING, logger="chain429.requestlog.writer")
    telemetry = Telemetry(db, batch_interval_s=0.01, retention_days=0).start()
    try:
        record_id = "req_unreachable"
        assert telemetry.submit(RequestRecord(id=record_id, started_at=0.0, outcome="success"))
        assert not telemetry.flush(0.5)  # not written, and not thrown away either
        assert telemetry.pending == 1 and telemetry.dropped == 0 and telemetry.written == 0
        assert telemetry.failures >= 2  # retried
        assert telemetry.last_error and SECRET not in telemetry.last_error
        assert caplog.records and all(SECRET not in r.getMessage() for r in caplog.records)
    finally:
        assert telemetry.stop(timeout=1.0)
    # A stop gives up on a database still down before its timeout: counted and logged.
    assert telemetry.dropped_by_reason["shutdown"] == 1 and telemetry.pending == 0
    assert any("1 records unwritten" in r.getMessage() for r in caplog.records)
    assert all(SECRET not in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ reading


def test_read_connection_refuses_the_event_loop(migrated: peewee.Database) -> None:
    def count() -> int:
        with read_connection(migrated):
            return RequestRow.select().count()

    async def main() -> int:
        with pytest.raises(RuntimeError, match=r"asyncio\.to_thread"):
            count()
        return await asyncio.to_thread(count)

    assert asyncio.run(main()) == 0
    migrated.close()
