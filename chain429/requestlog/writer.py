"""The request log writer: the request path hands records over without waiting.

`submit` puts a record in a bounded buffer (`chain429.requestlog.buffer`), safe from
the event loop and from any thread, and never blocks: a slow database must
never slow a request down. One writer thread owns every write: it takes up to
`batch_rows` records and writes requests, their attempt trails and the two
hourly rollups (of requests, of attempts) in one transaction, so a batch is
all there or not at all (the rollups themselves are `chain429.requestlog.rollup`'s).
Between batches it prunes rows older than the retention period, a little at a
time.

Nothing is lost silently. A batch the database fails to take (down, gone
mid-batch, disk full, locked) stays in hand and is retried, in order, with
backoff and a fresh connection, while new records wait behind it in the same
bounded buffer; only records that overflow the buffer, that the database
refuses outright (a record error, not an outage), or that a stop had to give
up on are dropped, and each is counted by reason. A `kill -9` loses what is not
committed yet: records submitted within the last `batch_interval_s` plus one
write (docs/observability.md has the numbers), or the whole buffer during an
outage.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import operator
import sqlite3
import threading
import time
from typing import Any

import peewee

from chain429.config.model import LOG_BUFFER_SIZE
from chain429.requestlog.buffer import Buffer
from chain429.requestlog.database import (
    bind,
    claim_retention,
    describe,
    is_postgres,
    scrub,
    write_transaction,
)
from chain429.requestlog.records import (
    SKIP_FIELDS,
    AttemptRecord,
    RequestRecord,
    SkipEncoder,
    is_skip,
)
from chain429.requestlog.rollup import (
    clip,
    column_limits,
    fields_of,
    latency_bucket,
    merge_rollups,
    quoted,
)
from chain429.requestlog.tables import (
    AttemptRow,
    HourlyAttemptRollup,
    HourlyRollup,
    HourlySpendRollup,
    RequestRow,
    database_proxy,
)
from chain429.upstream.times import DAY_MS, HOUR_MS

__all__ = ["DROP_REASONS", "Telemetry", "latency_bucket"]

log = logging.getLogger("chain429.requestlog.writer")

# PostgreSQL's wire protocol counts bind parameters in 16 bits.
_POSTGRES_MAX_PARAMS = 65535
# Past a few hundred rows a bigger INSERT is no faster, only a bigger string.
_MAX_ROWS_PER_STATEMENT = 500
_RETENTION_BATCH = 1000  # ids per DELETE: each step holds the write lock only briefly
_IDLE_WAIT_S = 1.0
# A failed write is retried after 0.1 s, 0.2 s, ... then every second: a
# database back up is written to within a second, one that stays down costs one
# connection attempt a second.
_RETRY_MIN_S = 0.1
_RETRY_MAX_S = 1.0
_STOP_MARGIN_S = 1.0  # a stop gives up on a failing database this long before its timeout
_FAILURE_LOG_INTERVAL_S = 30.0  # a database that is down fails every batch: log, not flood
_RECORD_ERRORS = frozenset({"IntegrityError", "DataError"})

# Under load a transaction starts at most this often (unless a batch is full):
# with one write's time it bounds what a kill -9 loses. See docs/observability.md.
DEFAULT_BATCH_INTERVAL_S = 0.1

# Why a record was dropped (`dropped_by_reason`, the `reason` label in /metrics).
DROPPED_FULL = "full"
DROPPED_REJECTED = "rejected"
DROPPED_SHUTDOWN = "shutdown"
DROP_REASONS = (DROPPED_FULL, DROPPED_REJECTED, DROPPED_SHUTDOWN)


_REQUEST_MODEL = set(RequestRow._meta.fields) - {"id", "time_ms"}
_ATTEMPT_MODEL = set(AttemptRow._meta.fields) - {"id", "request"}


# Record fields that have a column of the same name are copied as they are.
_REQUEST_COLUMNS = [f.name for f in dataclasses.fields(RequestRecord) if f.name in _REQUEST_MODEL]
_ATTEMPT_COLUMNS = [f.name for f in dataclasses.fields(AttemptRecord) if f.name in _ATTEMPT_MODEL]
_REQUEST_FIELDS = fields_of(RequestRow, ["id", "time_ms", *_REQUEST_COLUMNS, "skips"])
_ATTEMPT_FIELDS = fields_of(AttemptRow, ["request", *_ATTEMPT_COLUMNS])
_request_values = operator.attrgetter(*_REQUEST_COLUMNS)
_attempt_values = operator.attrgetter(*_ATTEMPT_COLUMNS)
_REQUEST_LIMITS = column_limits(_REQUEST_FIELDS)
_ATTEMPT_LIMITS = column_limits(_ATTEMPT_FIELDS)
# A skip's names are cut as a call's: the attempt rollup groups both by the cut name.
_SKIP_LIMITS = column_limits(fields_of(AttemptRow, list(SKIP_FIELDS[1:])))
_skips_column = SkipEncoder(cut=lambda values: clip(values, _SKIP_LIMITS))


def _request_row(r: RequestRecord) -> tuple[Any, ...]:
    values = (
        r.id,
        int(r.started_at * 1000),
        *_request_values(r),
        _skips_column(r.trail, r.leading_skips),
    )
    return clip(values, _REQUEST_LIMITS)


def _attempt_rows(r: RequestRecord) -> list[tuple[Any, ...]]:
    """A row per step of the trail but its skips (they go in `requests.skips`)."""
    trail = r.trail[len(r.leading_skips) :] if r.leading_skips else r.trail
    return [
        clip((r.id, *_attempt_values(a)), _ATTEMPT_LIMITS) for a in trail if not is_skip(a.outcome)
    ]


def _insert_sql(db: peewee.Database, model: Any, fields: list[Any], rows: int) -> str:
    table = quoted(db, model._meta.table_name)
    columns = ", ".join(quoted(db, f.column_name) for f in fields)
    row = "(" + ", ".join([db.param] * len(fields)) + ")"
    return f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * rows)}"


class Telemetry:
    """Owns the request log's writes: bounded buffer in, one writer thread, batched transactions."""

    def __init__(
        self,
        database: peewee.Database,
        *,
        buffer_size: int = LOG_BUFFER_SIZE,
        batch_rows: int = 500,
        batch_interval_s: float = DEFAULT_BATCH_INTERVAL_S,
        retention_days: int = 30,
        rollup_retention_days: int | None = None,
        retention_interval_s: float = 600.0,
        retention_delay_s: float = 10.0,
    ) -> None:
        if buffer_size < 1 or batch_rows < 1 or batch_interval_s < 0:
            raise ValueError("buffer_size and batch_rows must be >= 1, batch_interval_s >= 0")
        # The models write through chain429.requestlog.tables.database_proxy; transactions are
        # taken on `database`. They must be the same object or a batch would
        # not be atomic.
        if database_proxy.obj is None:
            bind(database)
        elif database_proxy.obj is not database:
            raise ValueError("the models are bound to another database; open it with open_database")
        self._db = database
        self._buffer: Buffer[RequestRecord] = Buffer(buffer_size)
        self._batch_rows = batch_rows
        self._batch_interval_s = batch_interval_s
        self._retention_days = retention_days
        self._rollup_retention_days = (
            retention_days if rollup_retention_days is None else rollup_retention_days
        )
        self._retention_interval_s = retention_interval_s
        self._retention_delay_s = retention_delay_s
        self._lock = threading.Lock()  # start/stop and the drop counters
        self._thread: threading.Thread | None = None
        self._wakeup = threading.Event()  # cuts a retry pause short at stop()
        self._give_up_at = math.inf  # set by stop(): when a failing database is given up on
        self._last_write = -math.inf  # monotonic start of the last write attempt
        self._dropped = dict.fromkeys(DROP_REASONS, 0)
        self._last_drop_at: float | None = None
        self._written = 0
        self._failures = 0
        self._last_error: str | None = None
        self._last_failure_log = -math.inf
        self._param_limit: int | None = None

    # ------------------------------------------------------------ request path

    def submit(self, record: RequestRecord) -> bool:
        """Buffer a finished request for writing; False (and counted) if the buffer is full."""
        if self._buffer.put(record):
            return True
        self._drop(DROPPED_FULL, 1)
        return False

    # ------------------------------------------------------------ what /health and /metrics read

    @property
    def database(self) -> peewee.Database:
        """Where rows go; stats read it from worker threads with `read_connection`."""
        return self._db

    @property
    def dropped(self) -> int:
        """Records that will never be written, for any reason (see `dropped_by_reason`)."""
        return sum(self._dropped.values())

    @property
    def dropped_by_reason(self) -> dict[str, int]:
        """`full`: refused, the buffer was full (or the log stopped); `rejected`: the
        database refused the record itself; `shutdown`: still unwritten when a stop
        gave up on a database that was down."""
        return dict(self._dropped)

    @property
    def last_drop_at(self) -> float | None:
        """`time.monotonic()` of the last drop, None if nothing was ever dropped."""
        return self._last_drop_at

    @property
    def pending(self) -> int:
        """Records accepted and not yet committed: queued, or in a batch being (re)tried."""
        return self._buffer.pending

    @property
    def buffer_size(self) -> int:
        return self._buffer.capacity

    @property
    def written(self) -> int:
        """Request rows committed to the database."""
        return self._written

    @property
    def failures(self) -> int:
        """Database errors met: failed batches (each retry counts), refused records, retention."""
        return self._failures

    @property
    def last_error(self) -> str | None:
        """The database's last error (passwords masked); None again once a write succeeds."""
        return self._last_error

    def health(self) -> dict[str, Any]:
        """The `log` object of /health."""
        return {
            "dropped": self.dropped,
            "pending": self.pending,
            "last_error": self._last_error,
            "written": self._written,
        }

    # ------------------------------------------------------------ life cycle

    def start(self) -> Telemetry:
        with self._lock:
            if self._buffer.closed:
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
        """Wait until every record accepted so far is committed (or dropped and counted)."""
        return self._buffer.wait_drained(timeout)

    def stop(self, timeout: float = 10.0) -> bool:
        """Write what is buffered, then end the writer thread. Idempotent; False if it timed out.

        A database that is down is retried until shortly before `timeout`; what is
        still unwritten then is dropped, counted (`shutdown`) and logged.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            if not self._buffer.closed:
                self._give_up_at = deadline - min(_STOP_MARGIN_S, timeout / 4)
                self._buffer.close()
            if self._thread is None:
                # Never started: start now so what was accepted still gets written.
                self._thread = self._spawn()
        self._wakeup.set()
        thread = self._thread
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.error("telemetry: writer still busy after %.1fs; %d pending", timeout, self.pending)
            return False
        return True

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        enabled = self._retention_days > 0 or self._rollup_retention_days > 0
        next_prune = time.monotonic() + self._retention_delay_s if enabled else math.inf
        pruning = False
        batch: list[RequestRecord] = []  # in hand: taken from the buffer, not yet committed
        retry = False  # the batch failed before: its commit may have gone through
        pause = _RETRY_MIN_S
        try:
            while True:
                try:
                    if not batch:
                        if self._buffer.closed and not self._buffer.pending:
                            return
                        now = time.monotonic()
                        wait_until = now if pruning else min(now + _IDLE_WAIT_S, next_prune)
                        batch, retry = self._next_batch(wait_until), False
                    if batch:
                        if not self._write(batch, retry):
                            retry = True
                            if self._pause_or_give_up(batch, pause):
                                batch = []
                            pause = min(2 * pause, _RETRY_MAX_S)
                            continue
                        self._buffer.release(len(batch))
                        batch, pause = [], _RETRY_MIN_S
                    if not self._buffer.closed and (pruning or time.monotonic() >= next_prune):
                        pruning = self._prune_step()
                        if not pruning:
                            next_prune = time.monotonic() + self._retention_interval_s
                except Exception:  # a bug here must not silence the log until restart
                    log.exception("telemetry writer: unexpected error")
                    time.sleep(_RETRY_MIN_S)
        finally:
            self._reset_connection()

    def _next_batch(self, wait_until: float) -> list[RequestRecord]:
        """The oldest records, up to a batch; [] if none came by `wait_until`.

        A record that finds the writer idle is written at once; under load a
        transaction starts at most every `batch_interval_s` unless a full batch
        is waiting. So a quiet proxy commits each record within one write's
        time, and a busy one still writes a few big transactions a second.
        """
        buffer = self._buffer
        if not buffer.wait(1, wait_until):
            return []
        write_at = self._last_write + self._batch_interval_s
        if not buffer.closed and time.monotonic() < write_at:
            buffer.wait(self._batch_rows, write_at)
        return buffer.take(self._batch_rows)

    def _pause_or_give_up(self, batch: list[RequestRecord], pause: float) -> bool:
        """After a failed write: wait before retrying, or past a stop's deadline give up (True)."""
        if self._buffer.closed:
            left = self._give_up_at - time.monotonic()
            if left <= 0:
                self._give_up(batch)
                return True
            pause = min(pause, left)
        self._wakeup.wait(pause)
        self._wakeup.clear()
        return False

    def _give_up(self, batch: list[RequestRecord]) -> None:
        count = len(batch) + self._buffer.discard_queued()
        self._buffer.release(len(batch))
        self._drop(DROPPED_SHUTDOWN, count)
        log.error(
            "request log %s: stopping with %d records unwritten (dropped): %s",
            describe(self._db),
            count,
            self._last_error,
        )

    def _write(self, batch: list[RequestRecord], retry: bool) -> bool:
        """Commit `batch`; False if the database failed and the batch must be retried.

        The batch is one transaction. After a failure the commit may have gone
        through anyway (the connection died before its answer), so a retry first
        leaves out records already there: nothing is written twice, rollups
        included.
        """
        self._last_write = time.monotonic()
        try:
            with write_transaction(self._db):
                todo = self._unwritten(batch) if retry else batch
                self._insert(todo)
                merge_rollups(self._db, todo)
        except Exception as exc:
            if not _refuses_a_record(exc):
                return self._retry_later(exc, f"batch of {len(batch)} kept, retrying")
            self._failed(exc, f"batch of {len(batch)} refused; writing its records one by one")
            return self._write_one_by_one(batch, retry)
        self._written += len(batch)
        self._recovered()
        return True

    def _write_one_by_one(self, batch: list[RequestRecord], retry: bool) -> bool:
        """Each record in a savepoint, so one the database refuses (a duplicate id, a
        value it cannot store) costs itself, not the batch."""
        kept: list[RequestRecord] = []
        refused = 0
        try:
            with write_transaction(self._db):
                for record in self._unwritten(batch) if retry else batch:
                    try:
                        with self._db.atomic():
                            self._insert([record])
                        kept.append(record)
                    except Exception as exc:
                        if not _refuses_a_record(exc):
                            raise
                        refused += 1
                        self._failed(exc, f"record {record.id} refused by the database, dropped")
                merge_rollups(self._db, kept)
        except Exception as exc:
            return self._retry_later(exc, f"batch of {len(batch)} kept, retrying")
        self._written += len(batch) - refused
        self._drop(DROPPED_REJECTED, refused)
        if not refused:
            self._recovered()
        return True

    def _unwritten(self, batch: list[RequestRecord]) -> list[RequestRecord]:
        """The records of `batch` whose row is not in the database yet."""
        ids = [r.id for r in batch]
        present: set[str] = set()
        per = min(_RETENTION_BATCH, self._max_params())
        for i in range(0, len(ids), per):
            query = RequestRow.select(RequestRow.id).where(RequestRow.id.in_(ids[i : i + per]))
            present.update(query.scalars())
        return [r for r in batch if r.id not in present] if present else batch

    def _insert(self, records: list[RequestRecord]) -> None:
        self._insert_rows(RequestRow, _REQUEST_FIELDS, [_request_row(r) for r in records])
        attempts = [row for r in records for row in _attempt_rows(r)]
        self._insert_rows(AttemptRow, _ATTEMPT_FIELDS, attempts)

    def _insert_rows(self, model: Any, fields: list[Any], rows: list[tuple[Any, ...]]) -> None:
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
            if hasattr(cursor, "copy"):
                columns = ", ".join(quoted(self._db, f.column_name) for f in fields)
                table = quoted(self._db, model._meta.table_name)
                with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:  # psycopg2
                cursor.executemany(_insert_sql(self._db, model, fields, 1), rows)
            return
        # SQLite: multi-row VALUES, chunked under its bind-parameter limit.
        per = max(1, min(_MAX_ROWS_PER_STATEMENT, self._max_params() // len(fields)))
        for i in range(0, len(rows), per):
            chunk = rows[i : i + per]
            sql = _insert_sql(self._db, model, fields, len(chunk))
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
        """Delete one small batch of expired rows; True while more remain.

        Each step first claims the retention lock (`claim_retention`): when
        another instance sharing the database holds it, this pass ends here
        and the next interval tries again, so one instance at a time prunes.
        """
        now_ms = int(time.time() * 1000)
        per = min(_RETENTION_BATCH, self._max_params())
        try:
            if self._retention_days > 0:
                cutoff = now_ms - self._retention_days * DAY_MS
                with write_transaction(self._db):
                    if not claim_retention(self._db):
                        return self._pruned_elsewhere()
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
                for model in (HourlyRollup, HourlyAttemptRollup, HourlySpendRollup):
                    key: Any = model._meta.primary_key
                    with write_transaction(self._db):
                        if not claim_retention(self._db):
                            return self._pruned_elsewhere()
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

    def _pruned_elsewhere(self) -> bool:
        log.debug("request log %s: another instance is pruning; skipping", describe(self._db))
        return False

    # ------------------------------------------------------------ failures

    def _drop(self, reason: str, count: int) -> None:
        if count:
            with self._lock:
                self._dropped[reason] += count
                self._last_drop_at = time.monotonic()

    def _retry_later(self, exc: BaseException, what: str) -> bool:
        self._failed(exc, what)
        self._reset_connection()
        return False

    def _recovered(self) -> None:
        if self._last_error is not None:
            self._last_error = None
            log.info(
                "request log %s: writing again (%d failures so far, %d pending)",
                describe(self._db),
                self._failures,
                self.pending,
            )

    def _failed(self, exc: BaseException, what: str) -> None:
        self._failures += 1
        self._last_error = scrub(f"{type(exc).__name__}: {exc}".strip())
        now = time.monotonic()
        if now - self._last_failure_log >= _FAILURE_LOG_INTERVAL_S:
            self._last_failure_log = now
            log.warning(
                "request log %s: %s: %s (%d failures, %d pending, %d dropped so far)",
                describe(self._db),
                what,
                self._last_error,
                self._failures,
                self.pending,
                self.dropped,
            )

    def _reset_connection(self) -> None:
        # After an error the connection may be dead (server restart); the next
        # query opens a fresh one.
        try:
            self._db.close()
        except Exception:
            self._db.dispose()


def _refuses_a_record(exc: BaseException) -> bool:
    """Whether the database refused what a record holds (it would refuse it again),
    as opposed to failing to write at all (down, full, locked: worth retrying).

    By DB-API class name, so it holds for Peewee's wrappers and for the drivers'
    own exceptions (sqlite3, psycopg) that the raw cursor raises.
    """
    return any(cls.__name__ in _RECORD_ERRORS for cls in type(exc).__mro__)
