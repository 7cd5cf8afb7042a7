"""The request log writer: the request path hands records over without waiting.

`submit` is a `put_nowait` onto a bounded queue, safe from the event loop and
from any thread; when the queue is full the record is dropped and counted,
because a slow database must never slow a request down. One writer thread
owns every write: it takes up to `batch_rows` records (or what arrived within
`batch_interval_s`) and writes requests, their attempt trails and the two
hourly rollups (of requests, of attempts) in one transaction, so a batch is
all there or not at all (the rollups themselves are `chain429.rollup`'s).
Between batches it prunes rows older than the retention period, a little at a
time.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import operator
import queue
import sqlite3
import threading
import time
from typing import Any

import peewee

from chain429.database import bind, describe, is_postgres, scrub, write_transaction
from chain429.db import (
    AttemptRow,
    HourlyAttemptRollup,
    HourlyRollup,
    RequestRow,
    database_proxy,
)
from chain429.records import AttemptRecord, RequestRecord
from chain429.rollup import (
    HOUR_MS,
    clip,
    column_limits,
    fields_of,
    latency_bucket,
    merge_rollups,
)

__all__ = ["Telemetry", "latency_bucket"]

log = logging.getLogger("chain429.telemetry")

DAY_MS = 86_400_000
# PostgreSQL's wire protocol counts bind parameters in 16 bits.
_POSTGRES_MAX_PARAMS = 65535
# Past a few hundred rows a bigger INSERT is no faster, only a bigger string.
_MAX_ROWS_PER_STATEMENT = 500
_RETENTION_BATCH = 1000  # ids per DELETE: each step holds the write lock only briefly
_IDLE_WAIT_S = 1.0
_RETRY_PAUSE_S = 0.1
_FAILURE_LOG_INTERVAL_S = 30.0  # a database that is down fails every batch: log, not flood


_REQUEST_MODEL = set(RequestRow._meta.fields) - {"id", "time_ms"}
_ATTEMPT_MODEL = set(AttemptRow._meta.fields) - {"id", "request"}


# Record fields that have a column of the same name are copied as they are.
_REQUEST_COLUMNS = [f.name for f in dataclasses.fields(RequestRecord) if f.name in _REQUEST_MODEL]
_ATTEMPT_COLUMNS = [f.name for f in dataclasses.fields(AttemptRecord) if f.name in _ATTEMPT_MODEL]
_REQUEST_FIELDS = fields_of(RequestRow, ["id", "time_ms", *_REQUEST_COLUMNS])
_ATTEMPT_FIELDS = fields_of(AttemptRow, ["request", *_ATTEMPT_COLUMNS])
_request_values = operator.attrgetter(*_REQUEST_COLUMNS)
_attempt_values = operator.attrgetter(*_ATTEMPT_COLUMNS)
_REQUEST_LIMITS = column_limits(_REQUEST_FIELDS)
_ATTEMPT_LIMITS = column_limits(_ATTEMPT_FIELDS)


def _request_row(r: RequestRecord) -> tuple[Any, ...]:
    return clip((r.id, int(r.started_at * 1000), *_request_values(r)), _REQUEST_LIMITS)


def _attempt_rows(r: RequestRecord) -> list[tuple[Any, ...]]:
    return [clip((r.id, *_attempt_values(a)), _ATTEMPT_LIMITS) for a in r.trail]


def _quoted(db: peewee.Database, name: str) -> str:
    return f"{db.quote[0]}{name}{db.quote[1]}"


def _insert_sql(db: peewee.Database, model: Any, fields: list[Any], rows: int, ignore: bool) -> str:
    table = _quoted(db, model._meta.table_name)
    columns = ", ".join(_quoted(db, f.column_name) for f in fields)
    row = "(" + ", ".join([db.param] * len(fields)) + ")"
    values = ", ".join([row] * rows)
    if not ignore:
        return f"INSERT INTO {table} ({columns}) VALUES {values}"
    if is_postgres(db):
        return f"INSERT INTO {table} ({columns}) VALUES {values} ON CONFLICT DO NOTHING"
    return f"INSERT OR IGNORE INTO {table} ({columns}) VALUES {values}"


class Telemetry:
    """Owns the request log's writes: bounded queue in, one writer thread, batched transactions."""

    def __init__(
        self,
        database: peewee.Database,
        *,
        queue_size: int = 10000,
        batch_rows: int = 500,
        batch_interval_s: float = 0.2,
        retention_days: int = 30,
        rollup_retention_days: int | None = None,
        retention_interval_s: float = 600.0,
        retention_delay_s: float = 10.0,
    ) -> None:
        if queue_size < 1 or batch_rows < 1 or batch_interval_s < 0:
            raise ValueError("queue_size and batch_rows must be >= 1, batch_interval_s >= 0")
        # The models write through chain429.db.database_proxy; transactions are
        # taken on `database`. They must be the same object or a batch would
        # not be atomic.
        if database_proxy.obj is None:
            bind(database)
        elif database_proxy.obj is not database:
            raise ValueError("the models are bound to another database; open it with open_database")
        self._db = database
        self._queue: queue.Queue[RequestRecord | None] = queue.Queue(maxsize=queue_size)
        self._batch_rows = batch_rows
        self._batch_interval_s = batch_interval_s
        self._retention_days = retention_days
        self._rollup_retention_days = (
            retention_days if rollup_retention_days is None else rollup_retention_days
        )
        self._retention_interval_s = retention_interval_s
        self._retention_delay_s = retention_delay_s
        self._lock = threading.Lock()  # start/stop and the drop counter
        self._thread: threading.Thread | None = None
        self._closed = False
        self._dropped = 0
        self._written = 0
        self._lost = 0
        self._failures = 0
        self._last_error: str | None = None
        self._last_failure_log = -math.inf
        self._failing = False
        self._param_limit: int | None = None

    # ------------------------------------------------------------ request path

    def submit(self, record: RequestRecord) -> bool:
        """Queue a finished request for writing; False (and counted) if the queue is full."""
        if not self._closed:
            try:
                self._queue.put_nowait(record)
                return True
            except queue.Full:
                pass
        with self._lock:
            self._dropped += 1
        return False

    # ------------------------------------------------------------ what /metrics reads

    @property
    def database(self) -> peewee.Database:
        """Where rows go; stats read it from worker threads with `read_connection`."""
        return self._db

    @property
    def dropped(self) -> int:
        """Records refused because the queue was full (or telemetry was stopped)."""
        return self._dropped

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def written(self) -> int:
        """Request rows committed to the database."""
        return self._written

    @property
    def lost(self) -> int:
        """Records accepted but given up on after the database failed their batch twice."""
        return self._lost

    @property
    def failures(self) -> int:
        """Database errors seen (a failed batch, record or retention step), retried or not."""
        return self._failures

    @property
    def last_error(self) -> str | None:
        """The last database error, with any password masked."""
        return self._last_error

    def stats(self) -> dict[str, Any]:
        return {
            "queue_depth": self.queue_depth,
            "queue_size": self._queue.maxsize,
            "dropped": self._dropped,
            "written": self._written,
            "lost": self._lost,
            "failures": self._failures,
            "last_error": self._last_error,
        }

    # ------------------------------------------------------------ life cycle

    def start(self) -> Telemetry:
        with self._lock:
            if self._closed:
                raise RuntimeError("telemetry was stopped; make a new one")
            if self._thread is None:
                self._thread = self._spawn()
        return self

    def _spawn(self) -> threading.Thread:
        # A daemon, so a database that hangs cannot keep the process from exiting;
        # stop() is what flushes.
        thread = threading.Thread(target=self._run, name="chain429-telemetry", daemon=True)
        thread.start()
        return thread

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record submitted so far is written (or counted lost)."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def stop(self, timeout: float = 10.0) -> bool:
        """Write what is queued, then end the writer thread. Idempotent; False if it timed out."""
        deadline = time.monotonic() + timeout
        with self._lock:
            first = not self._closed
            self._closed = True
            if self._thread is None:
                # Never started: start now so what was queued still gets written.
                self._thread = self._spawn()
        thread = self._thread
        if first:
            try:  # may wait while a full queue drains; the request path never calls this
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                log.error("telemetry: queue still full after %.1fs; not flushed", timeout)
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.error(
                "telemetry: writer still busy after %.1fs; %d queued", timeout, self.queue_depth
            )
            return False
        # Submits that raced with stop() landed after the writer's last look.
        leftover = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            self._queue.task_done()
            leftover += item is not None
        if leftover:
            with self._lock:
                self._dropped += leftover
        return True

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        enabled = self._retention_days > 0 or self._rollup_retention_days > 0
        next_prune = time.monotonic() + self._retention_delay_s if enabled else math.inf
        pruning = False
        try:
            while True:
                try:
                    wait = 0.0 if pruning else min(_IDLE_WAIT_S, next_prune - time.monotonic())
                    if self._take_and_write(max(0.0, wait)):
                        return
                    if pruning or time.monotonic() >= next_prune:
                        pruning = self._prune_step()
                        if not pruning:
                            next_prune = time.monotonic() + self._retention_interval_s
                except Exception:  # a bug here must not silence the log until restart
                    log.exception("telemetry writer: unexpected error")
                    time.sleep(_RETRY_PAUSE_S)
        finally:
            self._reset_connection()

    def _take_and_write(self, wait: float) -> bool:
        """Write one batch; True once the stop marker is seen and the rest is written."""
        batch, stopping = self._collect(wait)
        try:
            if batch:
                self._write(batch)
        finally:
            for _ in range(len(batch) + stopping):
                self._queue.task_done()
        while stopping:
            batch, _ = self._collect(0.0, block=False)
            if not batch:
                break
            try:
                self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()
        return stopping

    def _collect(self, wait: float, *, block: bool = True) -> tuple[list[RequestRecord], bool]:
        try:
            first = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
        except queue.Empty:
            return [], False
        if first is None:
            return [], True
        batch = [first]
        # Wait a little for more: a busy proxy fills the batch at once, a quiet
        # one pays one transaction per interval instead of one per request.
        deadline = time.monotonic() + (self._batch_interval_s if block else 0.0)
        while len(batch) < self._batch_rows:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _write(self, batch: list[RequestRecord]) -> None:
        try:
            with write_transaction(self._db):
                self._insert(batch)
                merge_rollups(self._db, batch, self._insert_rows)
            self._written += len(batch)
            if self._failing:
                self._failing = False
                log.info("request log %s: writing again", describe(self._db))
            return
        except Exception as exc:
            self._failed(exc, f"batch of {len(batch)} failed, retrying")
            self._reset_connection()
        time.sleep(_RETRY_PAUSE_S)
        # The retry isolates each record in a savepoint, so one bad record (a
        # duplicate id, say) costs itself and not the whole batch.
        kept: list[RequestRecord] = []
        try:
            with write_transaction(self._db):
                for record in batch:
                    try:
                        with self._db.atomic():
                            self._insert([record])
                        kept.append(record)
                    except Exception as exc:
                        self._failed(exc, f"record {record.id} dropped")
                merge_rollups(self._db, kept, self._insert_rows)
        except Exception as exc:
            self._failed(exc, f"batch of {len(batch)} dropped after a retry")
            self._reset_connection()
            self._lost += len(batch)
            return
        self._written += len(kept)
        self._lost += len(batch) - len(kept)

    def _insert(self, records: list[RequestRecord]) -> None:
        self._insert_rows(RequestRow, _REQUEST_FIELDS, [_request_row(r) for r in records])
        attempts = [row for r in records for row in _attempt_rows(r)]
        self._insert_rows(AttemptRow, _ATTEMPT_FIELDS, attempts)

    def _insert_rows(
        self, model: Any, fields: list[Any], rows: list[tuple[Any, ...]], ignore: bool = False
    ) -> None:
        """Insert many rows in as few round trips as the driver allows.

        The SQL is built here, not by `Model.insert_many`: Peewee renders each
        value through its query tree, which measured at ~90% of the writer's
        CPU, CPU the GIL takes from the event loop. Values are plain
        str/int/float/bool/None, which both drivers bind without conversion.
        PostgreSQL gets COPY (psycopg 3): psycopg re-parses a long multi-row
        INSERT on every call, which made it 9x slower than COPY here.
        """
        if not rows:
            return
        cursor = self._db.cursor()
        if is_postgres(self._db):
            if not ignore and hasattr(cursor, "copy"):
                columns = ", ".join(_quoted(self._db, f.column_name) for f in fields)
                table = _quoted(self._db, model._meta.table_name)
                with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:  # psycopg2, or the rollup's few blank rows
                cursor.executemany(_insert_sql(self._db, model, fields, 1, ignore), rows)
            return
        # SQLite: multi-row VALUES, chunked under its bind-parameter limit.
        per = max(1, min(_MAX_ROWS_PER_STATEMENT, self._max_params() // len(fields)))
        for i in range(0, len(rows), per):
            chunk = rows[i : i + per]
            sql = _insert_sql(self._db, model, fields, len(chunk), ignore)
            cursor.execute(sql, [value for row in chunk for value in row])

    def _max_params(self) -> int:
        """Bind parameters one statement may carry: SQLite's is a build option (999 before 3.32)."""
        if self._param_limit is None:
            if isinstance(self._db, peewee.SqliteDatabase):
                conn = self._db.connection()
                self._param_limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            else:
                self._param_limit = _POSTGRES_MAX_PARAMS
        return self._param_limit

    # ------------------------------------------------------------ retention

    def _prune_step(self) -> bool:
        """Delete one small batch of expired rows; True while more remain."""
        now_ms = int(time.time() * 1000)
        per = min(_RETENTION_BATCH, self._max_params())
        try:
            if self._retention_days > 0:
                cutoff = now_ms - self._retention_days * DAY_MS
                with write_transaction(self._db):
                    expired = RequestRow.select(RequestRow.id).where(RequestRow.time_ms < cutoff)
                    ids = list(expired.limit(per).scalars())
                    if ids:
                        AttemptRow.delete().where(AttemptRow.request.in_(ids)).execute()
                        RequestRow.delete().where(RequestRow.id.in_(ids)).execute()
                if len(ids) == per:
                    return True
            if self._rollup_retention_days > 0:
                # Only whole hours that ended before the cutoff.
                cutoff = now_ms - self._rollup_retention_days * DAY_MS - HOUR_MS
                more = False
                for model in (HourlyRollup, HourlyAttemptRollup):
                    key: Any = model._meta.primary_key
                    with write_transaction(self._db):
                        old = model.select(key).where(model.hour_ms < cutoff)
                        ids = list(old.limit(per).scalars())
                        if ids:
                            model.delete().where(key.in_(ids)).execute()
                    more = more or len(ids) == per
                return more
        except Exception as exc:
            self._failed(exc, "retention pass stopped; will try at the next interval")
            self._reset_connection()
        return False

    # ------------------------------------------------------------ failures

    def _failed(self, exc: BaseException, what: str) -> None:
        self._failures += 1
        self._failing = True
        self._last_error = scrub(f"{type(exc).__name__}: {exc}".strip())
        now = time.monotonic()
        if now - self._last_failure_log >= _FAILURE_LOG_INTERVAL_S:
            self._last_failure_log = now
            log.warning(
                "request log %s: %s: %s (%d failures, %d records lost so far)",
                describe(self._db),
                what,
                self._last_error,
                self._failures,
                self._lost,
            )

    def _reset_connection(self) -> None:
        # After an error the connection may be dead (server restart); the next
        # query opens a fresh one.
        try:
            self._db.close()
        except Exception:
            self._db.dispose()
