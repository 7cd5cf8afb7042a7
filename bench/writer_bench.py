"""The request-log writer: how fast it commits, and how long a record waits to be committed.

    .venv/bin/python bench/writer_bench.py                       # SQLite in a temp dir
    .venv/bin/python bench/writer_bench.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/writer_bench.py --rates 50,500,2000 --seconds 3 --json /tmp/writer.json

Two measures, on a fresh database each:

- drain: `--drain` records queued before the writer starts, then the time to
  commit them all: the writer's ceiling (full batches), records/s, and the
  writer thread's CPU per record (steadier than wall time on a busy machine);
- steady: records submitted at a fixed rate for `--seconds` from one thread,
  as the event loop would: transactions/s, the writer thread's CPU share (CPU
  the GIL takes from the event loop), and how long a record waited from submit
  to commit (p50/p99/max). A `kill -9` loses what was not committed yet, so the
  max is the crash window this build really has.

With `--postgres ADMIN_URL` a database `chain429_bench_<pid>` is created there
and dropped after. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from chain429.requestlog.database import migrate, open_database
from chain429.requestlog.records import AttemptRecord, RequestRecord, new_request_id
from chain429.requestlog.tables import ALL_MODELS
from chain429.requestlog.writer import Telemetry


def record() -> RequestRecord:
    """A typical record: answered by the third entry after a skip and a 429."""
    return RequestRecord(
        id=new_request_id(),
        started_at=time.time(),
        key_label="key#1",
        chain="fast",
        requested_model="fast",
        provider="groq",
        model="llama-3.3-70b",
        status=200,
        outcome="success",
        attempts=2,
        latency_ms=412.5,
        prompt_tokens=120,
        completion_tokens=48,
        total_tokens=168,
        trail=[
            AttemptRecord(1, "cerebras", "llama", "skip:cooldown", reason="cooling down"),
            AttemptRecord(2, "openrouter", "llama", "429", 429, 80.0, 60000, "rate limited"),
            AttemptRecord(3, "groq", "llama-3.3-70b", "200", 200, 330.5),
        ],
    )


@contextmanager
def fresh_database(postgres: str | None) -> Iterator[str]:
    if postgres is None:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
        return
    import psycopg

    name = f"chain429_bench_{os.getpid()}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(postgres)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Timed:
    """A Telemetry whose commits are timed: (commit time, records) per transaction."""

    def __init__(self, url: str, capacity: int = 10000, interval: float | None = None) -> None:
        database = open_database(url)
        migrate(database)
        self.database = database
        options: dict[str, Any] = {"retention_days": 0}
        if interval is not None:
            options["batch_interval_s"] = interval
        try:
            self.telemetry = Telemetry(database, buffer_size=capacity, **options)
        except TypeError:  # a build from before the buffer (to compare against)
            self.telemetry = Telemetry(database, queue_size=capacity, **options)
        self.commits: list[tuple[float, list[RequestRecord]]] = []
        write = self.telemetry._write

        def timed(batch: list[RequestRecord], *args: Any) -> Any:
            result = write(batch, *args)
            if result is not False:  # this build's _write: None, or True when committed
                self.commits.append((time.time(), list(batch)))
            return result

        self.telemetry._write = timed  # type: ignore[method-assign]

    def writer_cpu(self) -> float:
        thread = self.telemetry._thread
        assert thread is not None and thread.ident is not None
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))

    def close(self) -> None:
        assert self.telemetry.stop(30)
        self.database.connect(reuse_if_open=True)
        self.database.drop_tables(ALL_MODELS, safe=True)
        self.database.close()


def drain(url: str, n: int, interval: float | None) -> dict[str, Any]:
    timed = Timed(url, capacity=n, interval=interval)
    try:
        for _ in range(n):
            assert timed.telemetry.submit(record())
        started = time.perf_counter()
        timed.telemetry.start()
        cpu_before = timed.writer_cpu()  # the thread's, from its first instructions on
        assert timed.telemetry.flush(120)
        elapsed = time.perf_counter() - started
        cpu = timed.writer_cpu() - cpu_before
        return {
            "records": n,
            "seconds": round(elapsed, 3),
            "records_per_s": round(n / elapsed),
            "writer_cpu_us_per_record": round(1e6 * cpu / n, 1),
            "transactions": len(timed.commits),
        }
    finally:
        timed.close()


def steady(url: str, rate: float, seconds: float, interval: float | None) -> dict[str, Any]:
    timed = Timed(url, interval=interval)
    try:
        timed.telemetry.start()
        time.sleep(0.2)  # the writer's connection is open
        cpu_before = timed.writer_cpu()
        started = time.perf_counter()
        sent = 0
        while (now := time.perf_counter()) < started + seconds:
            due = int((now - started) * rate) + 1
            while sent < due:
                assert timed.telemetry.submit(record())
                sent += 1
            time.sleep(min(0.001, 1 / rate))
        assert timed.telemetry.flush(30)
        elapsed = time.perf_counter() - started
        cpu = timed.writer_cpu() - cpu_before
        waits = sorted(at - r.started_at for at, batch in timed.commits for r in batch)
        return {
            "rate": rate,
            "records": sent,
            "transactions_per_s": round(len(timed.commits) / elapsed, 1),
            "rows_per_transaction": round(sent / max(1, len(timed.commits)), 1),
            "writer_cpu_pct": round(100 * cpu / elapsed, 1),
            "wait_ms_p50": round(1000 * statistics.median(waits), 1),
            "wait_ms_p99": round(1000 * waits[int(0.99 * (len(waits) - 1))], 1),
            "wait_ms_max": round(1000 * waits[-1], 1),
        }
    finally:
        timed.close()


def table(rows: list[dict[str, Any]], out: Callable[[str], None]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    out("  ".join(f"{c:>20}" for c in columns))
    for row in rows:
        out("  ".join(f"{row[c]!s:>20}" for c in columns))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", help="admin URL of a PostgreSQL server (default: SQLite)")
    parser.add_argument("--drain", type=int, default=20000, help="records for the drain measure")
    parser.add_argument("--rates", default="50,500,2000", help="records/s for the steady measure")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each steady run")
    parser.add_argument(
        "--batch-interval", type=float, help="the writer's batch_interval_s (default: its own)"
    )
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {"backend": "postgres" if args.postgres else "sqlite"}
    with fresh_database(args.postgres) as url:
        print(f"drain {args.drain} records...", file=sys.stderr)
        results["drain"] = drain(url, args.drain, args.batch_interval)
        results["steady"] = []
        for rate in (float(r) for r in args.rates.split(",")):
            print(f"steady {rate:g}/s for {args.seconds:g} s...", file=sys.stderr)
            results["steady"].append(steady(url, rate, args.seconds, args.batch_interval))

    table([results["drain"]], print)
    print()
    table(results["steady"], print)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
