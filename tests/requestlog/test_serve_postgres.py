"""`chain429 serve` logging to PostgreSQL, as a user runs it.

The server process imports peewee without its PostgreSQL driver (13 MB that a
SQLite log never uses; chain429.requestlog) and attaches the driver when the
config names a PostgreSQL URL: this is the test that the attached driver works
end to end, migrations and writes included.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest

from chain429.fakes.provider import FakeProvider
from fixtures.processes import CHAIN429, free_port, stop, wait_healthy


@pytest.fixture(name="own_database")
def own_database_fixture(postgres_url: str) -> Iterator[str]:
    """A database of this test's own: the server migrates and fills it as it pleases."""
    name = f"chain429_serve_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}"))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_serve_writes_its_request_log_to_postgres(tmp_path, own_database):
    port = free_port()
    with FakeProvider("fake") as fake:
        config = tmp_path / "chain429.yaml"
        config.write_text(
            "version: 1\n"
            "settings:\n"
            "  apiKeys: [k]\n"
            f"  databaseUrl: {own_database}\n"
            "providers:\n"
            f"  - {{id: fake, type: generic-openai, baseUrl: '{fake.base_url}', apiKey: s3cret}}\n"
            "chains:\n"
            "  - name: c\n"
            "    entries:\n"
            "      - {provider: fake, model: m}\n"
        )
        proc = subprocess.Popen(
            [*CHAIN429, "serve", "-c", str(config), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=60)
            answers = [
                httpx.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json={"model": "c", "messages": [{"role": "user", "content": f"hi {i}"}]},
                    headers={"authorization": "Bearer k"},
                    timeout=30,
                )
                for i in range(3)
            ]
            assert [a.status_code for a in answers] == [200] * 3
        finally:
            assert stop(proc) == 0
    ids = {a.headers["x-request-id"] for a in answers}
    with psycopg.connect(own_database) as conn:
        rows = conn.execute("SELECT id, chain, provider, status FROM requests").fetchall()
        (migrations,) = conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()
    assert {r[0] for r in rows} == ids
    assert {(r[1], r[2], r[3]) for r in rows if r[0] in ids} == {("c", "fake", 200)}
    assert migrations >= 4
