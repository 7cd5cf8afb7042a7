"""Saving the memory state store to the database, so a restart remembers cooldowns.

Without this, a restarted chain429 would re-ask every provider whose daily
quota is gone and collect a 429 from each before it knew again. The memory
store exports its live state (blocks, bucket readings, day counters, strikes,
stream failures) as one JSON row per key in `provider_state`; at start the rows
are read back, and anything that expired while we were down is dropped.

Writes follow the request log's rules: the request path never waits on them.
Every `interval_s` the saver looks at the store's version counter; if it moved,
the state is exported on the event loop (the store is not thread-safe, and an
export is a walk over a few dicts), then written in a worker thread in one
transaction: rows that changed are upserted, rows whose state ended are
deleted. What a restart must not forget (a cooldown or a quota gone, learnt
from a provider's answer) does not wait for the tick: the store calls
`on_learnt`, which wakes the saver at once, so a crash a few milliseconds
after a 429 no longer re-asks that provider. Wake-ups that come while a save
runs are folded into one more save. A database error is logged (passwords
masked) and the write is tried again at the next interval; it never reaches a
request. `stop` writes once more, after the server has drained, so the last
answers are not forgotten.

The rows belong to one process: the memory store is the single-instance
default. Instances that must share state use a shared store (Redis), which
needs none of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import peewee

from chain429.requestlog.database import describe, scrub, write_transaction
from chain429.requestlog.tables import ProviderState

__all__ = ["PersistentStore", "StatePersister"]

log = logging.getLogger("chain429.requestlog.persist")

_KEY_MAX = ProviderState.key.max_length  # PostgreSQL rejects longer keys
_ROWS_PER_STATEMENT = 200  # 3 parameters each: under SQLite's oldest limit (999)
_FAILURE_LOG_INTERVAL_S = 30.0  # a database that is down fails every interval: log, not flood


class PersistentStore(Protocol):
    """What the saver needs of a state store (MemoryStateStore has it)."""

    version: int
    on_learnt: Callable[[], None] | None

    def export_state(self, now: float) -> dict[str, dict[str, Any]]: ...

    def import_state(self, items: dict[str, dict[str, Any]], now: float) -> int: ...


class StatePersister:
    """Loads the store at start, saves it when it changed (batched) and at stop."""

    def __init__(
        self,
        store: PersistentStore,
        database: peewee.Database,
        *,
        interval_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._db = database
        self._interval_s = interval_s
        self._clock = clock
        # What the table holds as far as we know: key -> data. Only rows that
        # differ are rewritten, and only rows we know of are deleted.
        self._saved: dict[str, str] = {}
        self._saved_version: int | None = None  # None: write at the first look
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()  # the store learnt something worth saving now
        self._writing = asyncio.Lock()
        self._last_failure_log = -math.inf
        self.writes = 0  # transactions committed
        self.failures = 0
        self.last_error: str | None = None

    # ------------------------------------------------------------ start

    def load(self) -> int:
        """Read the saved rows into the store; returns how many items it took.

        Blocking (run it before serving, or in a thread). A database that
        cannot be read is logged and the store starts empty: a lost memory
        costs a few 429s, refusing to start would cost every request.
        """
        try:
            rows = self._run_in_connection(self._read)
        except Exception as exc:
            self._failed(exc, "could not read saved rate-limit state; starting without it")
            return 0
        items: dict[str, dict[str, Any]] = {}
        for key, data in rows.items():
            try:
                value = json.loads(data)
            except ValueError:
                value = None
            if isinstance(value, dict):
                items[key] = value
            else:
                log.warning("saved rate-limit state %r ignored: not a JSON object", key)
        taken = self._store.import_state(items, self._clock())
        # Every row read is known: the first save deletes the ones that expired.
        self._saved = rows
        if taken:
            log.info("restored %d rate-limit state items from %s", taken, describe(self._db))
        return taken

    def _read(self) -> dict[str, str]:
        query: Any = ProviderState.select(ProviderState.key, ProviderState.data)
        return {str(key): str(data) for key, data in query.bind(self._db).tuples()}

    # ------------------------------------------------------------ saving

    def start(self) -> asyncio.Task[None]:
        """Run `run()` as a task on the running loop, woken early by the store's `on_learnt`."""
        if self._task is None:
            self._store.on_learnt = self._wake.set
            self._task = asyncio.create_task(self.run(), name="chain429-state-persister")
        return self._task

    async def run(self) -> None:
        """Save what changed every `interval_s`, or at once when woken, until `stop`."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            self._wake.clear()
            if self._stopping.is_set():
                return  # stop() writes the last snapshot itself
            try:
                await self.save()
            except Exception:  # a bug here must not end saving until restart
                log.exception("state persister: unexpected error")

    async def save(self, *, force: bool = False) -> bool:
        """Write the store's state if it changed since the last write; True if written.

        Never raises for a database error: it is logged and the next call retries.
        """
        async with self._writing:
            version = self._store.version
            if not force and version == self._saved_version:
                return False
            # Export on the loop: the store is only ever touched from here.
            items = self._store.export_state(self._clock())
            rows = {}
            for key, data in items.items():
                if len(key) > _KEY_MAX:
                    log.debug("rate-limit state key too long to save: %.80s...", key)
                    continue
                rows[key] = json.dumps(data, separators=(",", ":"), sort_keys=True)
            upserts = {k: v for k, v in rows.items() if self._saved.get(k) != v}
            deletes = sorted(set(self._saved) - set(rows))
            if upserts or deletes:
                try:
                    await asyncio.to_thread(self._run_in_connection, self._write, upserts, deletes)
                except Exception as exc:
                    self._failed(exc, "could not save rate-limit state; will retry")
                    return False
                self.writes += 1
                if self.last_error is not None:
                    self.last_error = None
                    log.info("rate-limit state %s: saving again", describe(self._db))
            self._saved = rows
            self._saved_version = version
            return True

    def _write(self, upserts: dict[str, str], deletes: list[str]) -> None:
        now_ms = int(self._clock() * 1000)
        with write_transaction(self._db):
            # Sorted, so two writers (a restart overlapping its predecessor)
            # take row locks in the same order and cannot deadlock.
            rows = [(key, upserts[key], now_ms) for key in sorted(upserts)]
            for i in range(0, len(rows), _ROWS_PER_STATEMENT):
                (
                    ProviderState.insert_many(
                        rows[i : i + _ROWS_PER_STATEMENT],
                        fields=[ProviderState.key, ProviderState.data, ProviderState.updated_ms],
                    )
                    .on_conflict(
                        conflict_target=[ProviderState.key],
                        preserve=[ProviderState.data, ProviderState.updated_ms],
                    )
                    .execute(self._db)
                )
            for i in range(0, len(deletes), _ROWS_PER_STATEMENT):
                chunk = deletes[i : i + _ROWS_PER_STATEMENT]
                ProviderState.delete().where(ProviderState.key.in_(chunk)).execute(self._db)

    async def stop(self) -> None:
        """End the saving task and write a final snapshot. Idempotent."""
        self._stopping.set()
        self._wake.set()
        if self._store.on_learnt == self._wake.set:
            self._store.on_learnt = None
        if self._task is not None:
            # return_exceptions: a task cancelled by someone else still gets its final write.
            await asyncio.gather(self._task, return_exceptions=True)
        await self.save()

    # ------------------------------------------------------------ plumbing

    def _run_in_connection(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call `fn` on this thread's own connection, closed after.

        Peewee's connections are per thread and `asyncio.to_thread` may use any
        executor thread: closing leaves no idle connection behind in each, and
        a connection broken by an error is never reused.
        """
        opened = self._db.connect(reuse_if_open=True)
        try:
            return fn(*args)
        finally:
            if opened:
                try:
                    self._db.close()
                except Exception:
                    self._db.dispose()  # pooled or broken: drop it without a word

    def _failed(self, exc: BaseException, what: str) -> None:
        self.failures += 1
        self.last_error = scrub(f"{type(exc).__name__}: {exc}".strip())
        now = time.monotonic()
        if now - self._last_failure_log >= _FAILURE_LOG_INTERVAL_S:
            self._last_failure_log = now
            log.warning(
                "rate-limit state %s: %s: %s (%d failures so far)",
                describe(self._db),
                what,
                self.last_error,
                self.failures,
            )
