"""Opening the request log from a URL, migrating it, and keeping passwords out of messages.

The fixtures at the top are shared with test_telemetry.py. PostgreSQL is the
machine's own server on 127.0.0.1:5432 (CHAIN429_TEST_POSTGRES_URL names another
admin URL); each test session creates a fresh database and drops it after. A
missing server fails the PostgreSQL half; only CHAIN429_SKIP_POSTGRES=1 skips it,
so a run can't go green by silently testing one backend.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import peewee
import pytest

from chain429.requestlog import database as database_module
from chain429.requestlog.database import (
    MIGRATIONS,
    mask_url,
    migrate,
    open_database,
    read_connection,
    scrub,
)
from chain429.requestlog.records import AttemptRecord, RequestRecord, new_request_id
from chain429.requestlog.tables import ALL_MODELS, RequestRow, SchemaMigration, database_proxy
from chain429.requestlog.writer import Telemetry

SECRET = "hunter2-s3cret"

PG_ADMIN_URL = os.environ.get(
    "CHAIN429_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session", name="postgres_url")
def postgres_url_fixture() -> Iterator[str]:
    if os.environ.get("CHAIN429_SKIP_POSTGRES") == "1":
        pytest.skip("CHAIN429_SKIP_POSTGRES=1")
    import psycopg  # here, so SQLite-only runs need no driver

    name = f"chain429_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit(urlsplit(PG_ADMIN_URL)._replace(path=f"/{name}"))
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"], name="database")
def database_fixture(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[peewee.Database]:
    """An empty database of each kind, bound to the models; tables dropped after."""
    saved = database_proxy.obj
    if request.param == "sqlite":
        db = open_database(f"sqlite:///{tmp_path / 'log.db'}")
    else:
        db = open_database(request.getfixturevalue("postgres_url"))
    try:
        yield db
    finally:
        if request.param == "postgres":
            db.connect(reuse_if_open=True)
            db.drop_tables(ALL_MODELS, safe=True)
        db.close()
        database_proxy.initialize(saved)


@pytest.fixture(name="migrated")
def migrated_fixture(database: peewee.Database) -> peewee.Database:
    migrate(database)
    return database


@pytest.fixture(autouse=True, name="no_writer_left")
def no_writer_left_fixture() -> Iterator[None]:
    """Every test must stop the writers it starts: a leaked thread would keep writing."""
    yield
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        alive = [t for t in threading.enumerate() if t.name == "chain429-telemetry"]
        if not alive:
            return
        time.sleep(0.01)
    pytest.fail(f"telemetry writer threads still running: {alive}")


@pytest.fixture(name="make_record")
def make_record_fixture() -> Callable[..., RequestRecord]:
    """A finished request as the router would hand it over; keywords override fields."""

    def make(**overrides: Any) -> RequestRecord:
        fields: dict[str, Any] = {
            "id": new_request_id(),
            "started_at": time.time(),
            "key_label": "team-a",
            "chain": "main",
            "requested_model": "auto",
            "provider": "groq",
            "model": "llama-3.3-70b",
            "status": 200,
            "outcome": "success",
            "attempts": 2,
            "latency_ms": 123.5,
            "prompt_tokens": 11,
            "completion_tokens": 7,
            "total_tokens": 18,
            "trail": [
                AttemptRecord(1, "cerebras", "llama", "skip:cooldown", reason="cooling down"),
                AttemptRecord(2, "openrouter", "llama", "429", 429, 80.0, 60000, "rate limited"),
                AttemptRecord(3, "groq", "llama-3.3-70b", "200", 200, 40.5),
            ],
        }
        fields.update(overrides)
        return RequestRecord(**fields)

    return make


@pytest.fixture(autouse=True)
def restore_binding() -> Iterator[None]:
    """open_database binds the shared proxy; give the next test back what it had."""
    saved = database_proxy.obj
    yield
    database_proxy.initialize(saved)


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
    assert migrate(database) == [3]
    assert RequestRow.get_by_id(old.id).route is None
    telemetry = Telemetry(database, batch_interval_s=0.01).start()
    new = RequestRecord(new_request_id(), time.time(), chain="fast", route="default", status=200)
    telemetry.submit(new)
    assert telemetry.stop()
    assert RequestRow.get_by_id(new.id).route == "default"
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
