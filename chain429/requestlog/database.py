"""Where the request log lives: open SQLite or PostgreSQL from a URL, migrate it, read it safely.

`open_database(url)` builds a Peewee database and binds `chain429.requestlog.tables.database_proxy`
to it; `migrate(database)` brings its schema up to date with numbered
migrations. Peewee keeps one connection per thread, so the telemetry writer
thread owns its own write connection and stats readers (run with
`asyncio.to_thread`) open theirs with `read_connection`.

URLs follow the SQLAlchemy / dj-database-url convention, which Python users
already know: `sqlite:///` is followed by a path, so `sqlite:///chain429.db` is
relative to the working directory and `sqlite:////var/lib/chain429.db`
(an f-string of `sqlite:///` and an absolute path) is absolute.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import peewee
import platformdirs

from chain429.requestlog.tables import (
    AttemptRow,
    HourlyAttemptRollup,
    HourlyRollup,
    HourlySpendRollup,
    ProviderState,
    RequestRow,
    SchemaMigration,
    database_proxy,
)
from chain429.upstream.times import HOUR_MS

__all__ = [
    "MIGRATIONS",
    "RETENTION_LOCK_KEY",
    "DatabaseError",
    "bind",
    "claim_retention",
    "default_sqlite_path",
    "describe",
    "is_postgres",
    "mask_url",
    "migrate",
    "open_database",
    "read_connection",
    "scrub",
    "write_transaction",
]

log = logging.getLogger("chain429.requestlog.database")

# What opening, migrating or writing the log raises beyond OSError and ValueError,
# for callers that do not import peewee themselves.
DatabaseError = peewee.PeeweeException

POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
SQLITE_BUSY_TIMEOUT_MS = 5000
# Any constants work; they only have to be the same in every chain429 process, so
# two instances starting together against one PostgreSQL migrate one at a time,
# and only one at a time deletes expired rows.
_MIGRATION_LOCK_KEY = 4290_0001
RETENTION_LOCK_KEY = 4290_0002

# Where each opened database points, masked, for log lines and errors.
_DESCRIPTIONS: weakref.WeakKeyDictionary[peewee.Database, str] = weakref.WeakKeyDictionary()

# ---------------------------------------------------------------- secrets in text

# scheme://userinfo@ — the greedy class stops at the netloc's end, so a
# password holding a (badly escaped) "@" is still masked up to the last one.
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@")
# libpq key=value strings and URL query strings can carry passwords too.
_PASSWORD_PARAM = re.compile(r"(?i)(?P<key>\bpassword\s*=\s*)(?P<value>'[^']*'|[^\s&;]+)")


def _mask_userinfo(match: re.Match[str]) -> str:
    user, sep, _password = match["userinfo"].partition(":")
    return f"{match['scheme']}{user}{':***' if sep else ''}@"


def scrub(text: str) -> str:
    """Mask every password in `text` (URLs, `password=` parameters): safe to log or raise."""
    text = _URL_USERINFO.sub(_mask_userinfo, text)
    return _PASSWORD_PARAM.sub(lambda m: f"{m['key']}***", text)


def mask_url(url: str) -> str:
    """The URL with its password replaced by `***`, for logs and error messages."""
    return scrub(url)


def describe(database: peewee.Database) -> str:
    """What a log line should say about a database: its masked URL or file path."""
    return _DESCRIPTIONS.get(database, type(database).__name__)


# ---------------------------------------------------------------- opening


def default_sqlite_path() -> Path:
    """`$CHAIN429_HOME/chain429.db`, else the platform's user data dir (created if missing)."""
    home = os.environ.get("CHAIN429_HOME")
    base = Path(home).expanduser() if home else platformdirs.user_data_path("chain429")
    return base / "chain429.db"


def open_database(url: str | None, *, db_path: str | None = None) -> peewee.Database:
    """Build the database for `url` (or 429chain's `db_path`, or the default file) and bind it.

    Nothing connects here: each thread connects on first use, and `migrate`
    is the first to do so at start-up.
    """
    database: peewee.Database
    if url is None or not url.strip():
        path = Path(db_path).expanduser() if db_path else default_sqlite_path()
        database = _open_sqlite(path)
        _DESCRIPTIONS[database] = str(path)
    else:
        url = url.strip()
        scheme = urlsplit(url).scheme.lower() if "://" in url else ""
        if scheme == "sqlite":
            database = _open_sqlite(_sqlite_path(url))
        elif scheme in POSTGRES_SCHEMES:
            database = _open_postgres(url)
        else:
            what = f"scheme {scheme!r}" if scheme else "no scheme"
            raise ValueError(
                f"unsupported database URL ({what}): {mask_url(url)}; use "
                "sqlite:///path/to/chain429.db or postgresql://user@host:5432/dbname"
            )
        _DESCRIPTIONS[database] = mask_url(url)
    bind(database)
    return database


def bind(database: peewee.Database) -> None:
    """Point the models (`chain429.requestlog.tables`) at `database`."""
    database_proxy.initialize(database)


def _sqlite_path(url: str) -> Path:
    rest = url.split("://", 1)[1]
    if "?" in rest or "#" in rest:
        raise ValueError(f"sqlite URLs take no query parameters: {mask_url(url)}")
    if not rest.startswith("/") or rest == "/":
        raise ValueError(
            f"sqlite URL needs a file after 'sqlite:///': {mask_url(url)} "
            "(sqlite:///relative.db or sqlite:////absolute/path.db)"
        )
    path = unquote(rest[1:])
    if path in (":memory:", "") or path.startswith("file:"):
        # Peewee gives each thread its own connection, and each would get its
        # own empty in-memory database: the writer's rows would be invisible.
        raise ValueError("an in-memory SQLite database cannot be shared by the writer thread")
    return Path(path).expanduser()


def _open_sqlite(path: Path) -> peewee.SqliteDatabase:
    # The log names callers, chains and errors: readable by its owner only.
    # SQLite gives the -wal and -shm files the database file's mode.
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    # A list, not a dict, because order matters: busy_timeout first so that
    # switching to WAL waits for a lock instead of failing. WAL lets stats
    # readers run while the writer writes; synchronous=NORMAL is durable in
    # WAL except for the last transactions before a power cut, which a
    # request log can afford. check_same_thread stays on: Peewee never shares
    # a connection between threads, each thread opens its own.
    pragmas = [
        ("busy_timeout", SQLITE_BUSY_TIMEOUT_MS),
        ("journal_mode", "wal"),
        ("synchronous", "normal"),
        ("foreign_keys", 1),
    ]
    return peewee.SqliteDatabase(str(path), pragmas=pragmas, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)


def _open_postgres(url: str) -> peewee.PostgresqlDatabase:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in database URL {mask_url(url)}") from None
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname:
        raise ValueError(f"PostgreSQL URL needs a database name: {mask_url(url)}")
    params: dict[str, Any] = {}
    if parts.username:
        params["user"] = unquote(parts.username)
    if parts.password is not None:
        params["password"] = unquote(parts.password)
    if parts.hostname:
        params["host"] = parts.hostname
    if port is not None:
        params["port"] = port
    # Query parameters are libpq's (sslmode=require, ...). The defaults below
    # name us in pg_stat_activity and keep an unreachable server from hanging
    # a thread for the OS's TCP timeout (minutes).
    params.update(parse_qsl(parts.query))
    params.setdefault("application_name", "chain429")
    params.setdefault("connect_timeout", 5)
    # Peewee 4 drives psycopg2 or psycopg 3; we ship psycopg 3 (the maintained one).
    _attach_psycopg()
    return peewee.PostgresqlDatabase(dbname, prefer_psycopg3=True, **params)


def _attach_psycopg() -> None:
    """Hand peewee the psycopg 3 driver it was imported without (see chain429.requestlog).

    What peewee's own import would have set: its module's driver names and its
    psycopg 3 adapter's transaction states. tests/requestlog/test_shared_database.py
    drives PostgreSQL through this path in fresh processes.
    """
    if getattr(peewee, "psycopg", None) is not None:
        return
    import psycopg
    from psycopg.pq import TransactionStatus
    from psycopg.types.json import Json, Jsonb

    module: Any = peewee
    module.psycopg, module.TransactionStatus = psycopg, TransactionStatus
    module.Json_pg3, module.Jsonb_pg3 = Json, Jsonb
    adapter = module.Psycopg3Adapter
    adapter.txn_idle = TransactionStatus.IDLE
    adapter.txn_inerror = TransactionStatus.INERROR
    adapter.txn_unknown = TransactionStatus.UNKNOWN


def is_postgres(database: peewee.Database) -> bool:
    return isinstance(database, peewee.PostgresqlDatabase)


def write_transaction(database: peewee.Database) -> Any:
    """A transaction that may read then write without a lock upgrade failing.

    SQLite's default (deferred) transaction takes the write lock only at the
    first write, and fails at once with "database is locked" if another
    connection got it meanwhile; IMMEDIATE takes it up front, waiting up to
    busy_timeout, so what reads then writes (a retried batch leaving out the
    records already there, retention's select-then-delete) is serialized.
    """
    if isinstance(database, peewee.SqliteDatabase):
        return database.atomic("IMMEDIATE")
    return database.atomic()


def claim_retention(database: peewee.Database) -> bool:
    """Inside a `write_transaction`: whether this instance may delete expired rows now.

    On PostgreSQL several instances share the database, and each runs its own
    retention timer; `pg_try_advisory_xact_lock` lets one prune while another
    that finds the lock held skips its turn instead of deleting the same rows
    beside it (wasted work, and two DELETEs meeting rows in different orders
    can deadlock). The lock ends with the transaction, so an instance that
    dies mid-step holds nothing. On SQLite there is nothing to claim: one file
    lives on one host, and the IMMEDIATE transaction already holds its only
    write lock (several processes on that host take turns).
    """
    if not is_postgres(database):
        return True
    cursor = database.execute_sql("SELECT pg_try_advisory_xact_lock(%s)", (RETENTION_LOCK_KEY,))
    return bool(cursor.fetchone()[0])


@contextmanager
def read_connection(database: peewee.Database) -> Iterator[peewee.Database]:
    """Run stats queries in a worker thread: `await asyncio.to_thread(fn)` where fn does

        with read_connection(database):
            rows = list(RequestRow.select()...)

    The connection is this thread's own (Peewee's are thread-local), so reads
    never touch the writer's; with SQLite's WAL they see the last committed
    batch without waiting for the writer. The queries share one snapshot
    (REPEATABLE READ on PostgreSQL). A connection this opened is closed after,
    so executor threads do not each keep one open to the server.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("database reads block: run them with asyncio.to_thread")
    opened = database.connect(reuse_if_open=True)
    try:
        if is_postgres(database):
            with database.atomic(isolation_level="REPEATABLE READ"):
                yield database
        else:
            with database.atomic():
                yield database
    finally:
        if opened:
            database.close()


# ---------------------------------------------------------------- migrations

Migration = tuple[int, str, Callable[[peewee.Database], None]]


# The tables migration 1 created when it was released. Spelled out rather than
# read from `chain429.requestlog.tables.ALL_MODELS`, which grows: a table a later migration
# adds must not appear early in a fresh database, or that migration (an ALTER,
# a backfill) would meet a table it did not expect.
_MIGRATION_1_MODELS = (RequestRow, AttemptRow, HourlyRollup, ProviderState, SchemaMigration)


def _create_tables(database: peewee.Database) -> None:
    database.create_tables(_MIGRATION_1_MODELS, safe=True)


def _create_attempt_rollup(database: peewee.Database) -> None:
    """`hourly_attempt_rollup`, filled from the attempt trails already logged.

    The backfill runs in the migration's transaction: on SQLite its write lock
    keeps the writer out until the table and its rows are there together. An
    instance still running the previous version against the same PostgreSQL
    keeps writing trails without counting them here; upgrade them all.
    """
    database.create_tables([HourlyAttemptRollup], safe=True)
    A, R, H = AttemptRow, RequestRow, HourlyAttemptRollup
    hour = (R.time_ms / HOUR_MS) * HOUR_MS  # integers: "/" truncates, times are >= 0
    trails = (
        A.select(
            hour,
            A.provider,
            A.model,
            A.outcome,
            peewee.fn.COUNT(peewee.SQL("*")),
            peewee.fn.COALESCE(peewee.fn.SUM(A.latency_ms), 0.0),
        )
        .join(R, on=(A.request == R.id))
        # GROUP BY 1..4: psycopg 3 binds the two HOUR_MS of `hour` as separate
        # parameters, and PostgreSQL would not match the expression to SELECT's.
        .group_by(*(peewee.SQL(str(i)) for i in range(1, 5)))
    )
    fields = [H.hour_ms, H.provider, H.model, H.outcome, H.count, H.latency_sum_ms]
    H.insert_from(trails, fields).execute()


def _add_route_column(database: peewee.Database) -> None:
    """`requests.route`: why a request went to its chain (chain, model, default).

    A database created by this version already has it (migration 1 builds the
    table from today's model); one created before gets it added, empty for
    the rows logged then.
    """
    if "route" in {column.name for column in database.get_columns("requests")}:
        return
    database.execute_sql('ALTER TABLE "requests" ADD COLUMN "route" VARCHAR(16)')


def _add_client_column(database: peewee.Database) -> None:
    """`requests.client`: which `clients:` entry sent the request, with its index.

    As for `route`: a database created by this version has the column already;
    the index is created either way (stats by client read by it).
    """
    if "client" not in {column.name for column in database.get_columns("requests")}:
        database.execute_sql('ALTER TABLE "requests" ADD COLUMN "client" VARCHAR(64)')
    database.execute_sql(
        'CREATE INDEX IF NOT EXISTS "requests_client_time_ms" ON "requests" ("client", "time_ms")'
    )


def _add_spend(database: peewee.Database) -> None:
    """`requests.cost_usd` and `cost_estimated` (what an answer cost), and the spend rollup.

    As for `route`: a database created by this version has the columns from
    migration 1; one created before gets them, null (unpriced) for the rows
    logged then, so the new rollup starts empty: there is nothing to backfill.
    """
    columns = {column.name for column in database.get_columns("requests")}
    double = "DOUBLE PRECISION" if is_postgres(database) else "REAL"
    if "cost_usd" not in columns:
        database.execute_sql(f'ALTER TABLE "requests" ADD COLUMN "cost_usd" {double}')
    if "cost_estimated" not in columns:
        database.execute_sql(
            'ALTER TABLE "requests" ADD COLUMN "cost_estimated" BOOLEAN NOT NULL DEFAULT FALSE'
        )
    database.create_tables([HourlySpendRollup], safe=True)


# The rollups' unique keys (their upserts' ON CONFLICT target) before and after
# migration 5, spelt out for the same reason as _MIGRATION_1_MODELS.
_ENDPOINT_KEYS = {
    "hourly_rollup": (["hour_ms", "chain", "provider", "outcome"], "endpoint"),
    "hourly_attempt_rollup": (["hour_ms", "provider", "model", "outcome"], "endpoint"),
}


def _add_endpoint_columns(database: peewee.Database) -> None:
    """`endpoint` (chat, completions, embeddings) on `requests` and on both rollups,
    where it joins the unique key, so stats can be split and filtered by it.

    Rows logged before are chat: it was the only route. A database created by
    this version has all of it (migrations 1 and 2 build today's tables). An
    instance still running the previous version against the same PostgreSQL
    cannot merge into the rollups once their key has changed; upgrade them all.
    """
    for table in ("requests", *_ENDPOINT_KEYS):
        if "endpoint" not in {column.name for column in database.get_columns(table)}:
            database.execute_sql(
                f'ALTER TABLE "{table}" ADD COLUMN "endpoint" VARCHAR(16) NOT NULL DEFAULT \'chat\''
            )
    for table, (old, added) in _ENDPOINT_KEYS.items():
        _rekey(database, table, old, [*old, added])


def _rekey(database: peewee.Database, table: str, old: list[str], new: list[str]) -> None:
    """Make a rollup's unique key (its upserts' conflict target) `new` instead of `old`.

    A table that already has `new` or a longer key starting with it (built by a
    later version's migration 1, or grown by a later migration) is left as it is.
    """
    indexes = [index for index in database.get_indexes(table) if index.unique]
    for index in indexes:
        if list(index.columns) == old:
            database.execute_sql(f'DROP INDEX "{index.name}"')
    if not any(list(index.columns)[: len(new)] == new for index in indexes):
        # Named as Peewee names the index of a table it creates.
        name = "_".join([table, *new])
        columns = ", ".join(f'"{column}"' for column in new)
        database.execute_sql(f'CREATE UNIQUE INDEX "{name}" ON "{table}" ({columns})')


def _add_rollup_client(database: peewee.Database) -> None:
    """`hourly_rollup.client`: the rollup gains the client dimension, so stats per client
    over 30 days read rollup rows, not every request (one rollup row per hour, chain,
    provider, outcome, endpoint and client: clients are a bounded set from the config).

    Its unique key grows by the column (the writer's upsert conflicts on it). Rows
    rolled up before have "" (anonymous): the requests logged before clients existed
    had none. A database created by this version has both already. Instances of the
    previous version writing to the same PostgreSQL upsert on the old key and fail
    after this: upgrade them all.
    """
    if "client" not in {column.name for column in database.get_columns("hourly_rollup")}:
        database.execute_sql(
            """ALTER TABLE "hourly_rollup" ADD COLUMN "client" VARCHAR(64) NOT NULL DEFAULT ''"""
        )
    old = ["hour_ms", "chain", "provider", "outcome", "endpoint"]
    _rekey(database, "hourly_rollup", old, [*old, "client"])


def _add_skips_column(database: peewee.Database) -> None:
    """`requests.skips`: a request's skips as JSON, instead of a row each in `attempts`.

    As for `route`: a database created by this version has the column already.
    Rows logged before keep their skips as rows of `attempts`, where the request
    detail and the stats still find them: nothing is moved. An instance of the
    previous version writing to the same PostgreSQL keeps writing skip rows,
    which read the same.
    """
    if "skips" not in {column.name for column in database.get_columns("requests")}:
        database.execute_sql('ALTER TABLE "requests" ADD COLUMN "skips" TEXT')


# Append only: a released number is never renumbered or edited, because
# databases out there record it as applied.
MIGRATIONS: list[Migration] = [
    (1, "create tables", _create_tables),
    (2, "hourly attempt rollup", _create_attempt_rollup),
    (3, "request route", _add_route_column),
    (4, "request client", _add_client_column),
    (5, "request endpoint", _add_endpoint_columns),
    (6, "request cost and spend rollup", _add_spend),
    (7, "rollup client", _add_rollup_client),
    (8, "request skips", _add_skips_column),
]


@contextmanager
def _migration_transaction(database: peewee.Database) -> Iterator[None]:
    with write_transaction(database):
        if is_postgres(database):
            # Held to the end of the transaction: a second instance waits,
            # then finds the migration recorded and skips it.
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
        yield


def migrate(database: peewee.Database) -> list[int]:
    """Apply the migrations not yet recorded in `schema_migrations`, in order; return their numbers.

    Each runs in its own transaction with its ledger row, so a failure leaves
    the schema at the last complete step. Running it again is a no-op.
    """
    if database_proxy.obj is not database:
        bind(database)
    try:
        opened = database.connect(reuse_if_open=True)
    except peewee.OperationalError as exc:
        raise peewee.OperationalError(
            f"cannot open the request log database {describe(database)}: {scrub(str(exc))}"
        ) from None
    try:
        return _apply_pending(database)
    finally:
        # Start-up runs this on a thread that will not query again: leave no
        # idle connection behind (the writer and readers open their own).
        if opened:
            database.close()


def _apply_pending(database: peewee.Database) -> list[int]:
    with _migration_transaction(database):
        database.create_tables([SchemaMigration], safe=True)
    applied_now: list[int] = []
    for number, name, apply in sorted(MIGRATIONS, key=lambda m: m[0]):
        with _migration_transaction(database):
            if SchemaMigration.get_or_none(SchemaMigration.number == number) is not None:
                continue
            apply(database)
            SchemaMigration.create(number=number, name=name, applied_ms=int(time.time() * 1000))
        log.info("database %s: applied migration %d (%s)", describe(database), number, name)
        applied_now.append(number)
    newest = SchemaMigration.select(peewee.fn.MAX(SchemaMigration.number)).scalar() or 0
    if newest > MIGRATIONS[-1][0]:
        log.warning(
            "database %s has schema %d, newer than this chain429 knows (%d); "
            "an older version is running against a newer database",
            describe(database),
            newest,
            MIGRATIONS[-1][0],
        )
    return applied_now
