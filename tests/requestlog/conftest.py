"""The request log's tests run on both backends: SQLite files and the machine's PostgreSQL.

PostgreSQL is the server on 127.0.0.1:5432 (CHAIN429_TEST_POSTGRES_URL names
another admin URL); each test session creates a fresh database and drops it
after. A missing server fails the PostgreSQL half; only CHAIN429_SKIP_POSTGRES=1
skips it, so a run can't go green by silently testing one backend.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import peewee
import pytest

from chain429.requestlog.database import migrate, open_database
from chain429.requestlog.records import AttemptRecord, RequestRecord, new_request_id
from chain429.requestlog.tables import ALL_MODELS, database_proxy

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
