"""How fast the stats API answers over a big request log: 1,000,000 requests, 30 days.

    .venv/bin/python bench/stats_bench.py                    # SQLite at /tmp (built once)
    .venv/bin/python bench/stats_bench.py --postgres postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/stats_bench.py --rebuild --rows 200000 --json /tmp/stats.json

Fills the log directly (insert_many in big transactions, rows in time order as
the writer appends them) with both rollups (requests, attempts) consistent with
the rows, then times each question over the last 24h, 7d and 30d: one warm-up,
then the median of `--runs` runs. Each run opens and closes its own
connection, as a server thread does. Goal: summary, timeseries and providers
under 200 ms at every range. A file or schema already holding `--rows`
requests is reused; `--rebuild` refills it.
Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import peewee

from chain429.requestlog import listing, provider_stats, stats
from chain429.requestlog.database import bind, migrate, open_database
from chain429.requestlog.tables import (
    ALL_MODELS,
    LATENCY_BUCKETS_MS,
    AttemptRow,
    HourlyAttemptRollup,
    HourlyRollup,
    RequestRow,
)

HOUR = 3_600_000
DAY = 86_400_000
GOAL_MS = 200.0
GOAL_QUESTIONS = ("summary", "timeseries", "providers")
CHAINS = {
    "fast": ("groq", "cerebras", "sambanova"),
    "smart": ("gemini", "openrouter", "mistral"),
    "code": ("openrouter", "deepseek"),
}
# outcome, share, HTTP status, answered by the chain's entry (False: nobody answered)
OUTCOMES = (
    ("success", 0.86, 200, True),
    ("all_providers_exhausted", 0.07, 503, False),
    ("client_error", 0.03, 400, True),
    ("stream_interrupted", 0.02, 200, True),
    ("client_disconnected", 0.02, 499, True),
)
REQUEST_FIELDS = [
    RequestRow.id,
    RequestRow.time_ms,
    RequestRow.key_label,
    RequestRow.chain,
    RequestRow.requested_model,
    RequestRow.provider,
    RequestRow.model,
    RequestRow.status,
    RequestRow.outcome,
    RequestRow.stream,
    RequestRow.attempts,
    RequestRow.latency_ms,
    RequestRow.prompt_tokens,
    RequestRow.completion_tokens,
    RequestRow.total_tokens,
]
ATTEMPT_FIELDS = [
    AttemptRow.request,
    AttemptRow.order,
    AttemptRow.provider,
    AttemptRow.model,
    AttemptRow.outcome,
    AttemptRow.status,
    AttemptRow.latency_ms,
]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fill(db: peewee.Database, rows: int, days: int, trails: float, seed: int) -> None:
    """Replace the log with `rows` requests over `days` days ending now, and their rollups."""
    rng = random.Random(seed)
    db.drop_tables(ALL_MODELS, safe=True)
    migrate(db)  # records the migrations again after the drop
    end_ms = int(time.time() * 1000)
    times = sorted(end_ms - rng.randrange(days * DAY) for _ in range(rows))
    outcome_weights = [o[1] for o in OUTCOMES]
    chain_names = list(CHAINS)
    rollup: dict[tuple[int, str, str, str], list[Any]] = {}
    attempt_rollup: dict[tuple[int, str, str, str], list[Any]] = {}
    # SQLite allows 32,766 bound values a statement; PostgreSQL 65,535.
    batch = 32_000 // len(REQUEST_FIELDS)
    started = time.perf_counter()
    requests: list[tuple[Any, ...]] = []
    attempts: list[tuple[Any, ...]] = []

    def flush() -> None:
        with db.atomic():
            for i in range(0, len(requests), batch):
                RequestRow.insert_many(requests[i : i + batch], fields=REQUEST_FIELDS).execute()
            for i in range(0, len(attempts), batch):
                AttemptRow.insert_many(attempts[i : i + batch], fields=ATTEMPT_FIELDS).execute()
        requests.clear()
        attempts.clear()

    for n, time_ms in enumerate(times):
        chain = rng.choice(chain_names)
        entries = CHAINS[chain]
        outcome, _, status, answered = rng.choices(OUTCOMES, outcome_weights)[0]
        skipped = rng.randrange(len(entries)) if answered else len(entries)
        provider = entries[min(skipped, len(entries) - 1)] if answered else None
        calls = min(skipped, len(entries) - 1) + 1 if answered else len(entries)
        latency = round(rng.lognormvariate(6.6, 0.9), 2)
        ok = status == 200
        prompt = rng.randint(20, 2000) if ok else None
        completion = rng.randint(5, 800) if ok else None
        rid = f"req_{time_ms:012x}{n:014x}"
        requests.append(
            (
                rid,
                time_ms,
                f"key#{n % 3 + 1}",
                chain,
                chain,
                provider,
                f"{provider}-model" if provider else None,
                status,
                outcome,
                n % 3 == 0,
                calls,
                latency,
                prompt,
                completion,
                prompt + completion if prompt and completion else None,
            )
        )
        if rng.random() < trails:
            for order in range(1, calls + 1):
                entry = entries[order - 1]
                last = order == calls
                token = str(status) if last and answered else "429"
                attempts.append((rid, order, entry, f"{entry}-model", token, int(token), 300.0))
                hour_key = (time_ms // HOUR * HOUR, entry, f"{entry}-model", token)
                tally = attempt_rollup.setdefault(hour_key, [0, 0.0])
                tally[0] += 1
                tally[1] += 300.0
        key = (time_ms // HOUR * HOUR, chain, provider or "", outcome)
        acc = rollup.get(key)
        if acc is None:
            acc = rollup[key] = [0, 0, 0, 0, 0, 0.0, [0] * (len(LATENCY_BUCKETS_MS) + 1)]
        acc[0] += 1
        acc[1] += outcome != "success"
        acc[2] += calls
        acc[3] += prompt or 0
        acc[4] += completion or 0
        acc[5] += latency
        acc[6][bisect.bisect_left(LATENCY_BUCKETS_MS, latency)] += 1
        if len(requests) >= 100_000:
            flush()
            say(f"  {n + 1:,} requests ({time.perf_counter() - started:.0f} s)")
    flush()
    rollup_rows = [
        (hour, chain, provider, outcome, a[0], a[1], a[2], a[3], a[4], a[5], json.dumps(a[6]))
        for (hour, chain, provider, outcome), a in rollup.items()
    ]
    fields = [
        HourlyRollup.hour_ms,
        HourlyRollup.chain,
        HourlyRollup.provider,
        HourlyRollup.outcome,
        HourlyRollup.requests,
        HourlyRollup.errors,
        HourlyRollup.attempts,
        HourlyRollup.prompt_tokens,
        HourlyRollup.completion_tokens,
        HourlyRollup.latency_sum_ms,
        HourlyRollup.latency_histogram,
    ]
    attempt_rows = [(*key, count, latency) for key, (count, latency) in attempt_rollup.items()]
    attempt_fields = [
        HourlyAttemptRollup.hour_ms,
        HourlyAttemptRollup.provider,
        HourlyAttemptRollup.model,
        HourlyAttemptRollup.outcome,
        HourlyAttemptRollup.count,
        HourlyAttemptRollup.latency_sum_ms,
    ]
    with db.atomic():
        for i in range(0, len(rollup_rows), 2000):
            HourlyRollup.insert_many(rollup_rows[i : i + 2000], fields=fields).execute()
        for i in range(0, len(attempt_rows), 4000):
            HourlyAttemptRollup.insert_many(
                attempt_rows[i : i + 4000], fields=attempt_fields
            ).execute()
    if isinstance(db, peewee.PostgresqlDatabase):
        db.execute_sql("ANALYZE")  # fresh planner statistics, as autovacuum would give later
    say(
        f"  filled in {time.perf_counter() - started:.0f} s; {len(rollup_rows):,} rollup rows, "
        f"{len(attempt_rows):,} attempt rollup rows"
    )


def open_postgres(url: str, schema: str) -> peewee.Database:
    # A schema of its own, so the bench never touches tables that tests or a live proxy use.
    admin = open_database(url)
    admin.execute_sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    admin.close()
    parts = urlsplit(url)
    options = urlencode({"options": f"-c search_path={schema}"})
    query = f"{parts.query}&{options}" if parts.query else options
    return open_database(parts._replace(query=query).geturl())


def timed(call: Callable[[], Any], runs: int) -> list[float]:
    call()  # warm-up: page cache, prepared plans
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="/tmp/chain429-stats-bench.db", help="SQLite file")
    parser.add_argument("--postgres", metavar="URL", help="also run against this PostgreSQL")
    parser.add_argument("--schema", default="chain429_bench", help="PostgreSQL schema to use")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--trails", type=float, default=0.1, help="share of requests with trails")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()

    targets = [("sqlite", open_database(f"sqlite:///{Path(args.db).resolve()}"))]
    if args.postgres:
        targets.append(("postgres", open_postgres(args.postgres, args.schema)))
    results: list[dict[str, Any]] = []
    for kind, db in targets:
        bind(db)  # the models follow one global proxy: point it at this target
        migrate(db)
        have = RequestRow.select().count()
        if args.rebuild or have != args.rows:
            say(f"{kind}: filling {args.rows:,} requests over {args.days} days (had {have:,})")
            fill(db, args.rows, args.days, args.trails, seed=429)
        now_ms = (RequestRow.select(peewee.fn.MAX(RequestRow.time_ms)).scalar() or 0) + 1
        db.close()  # from here on, each question opens its own connection, as on a server
        for label, span in (("24h", DAY), ("7d", 7 * DAY), ("30d", 30 * DAY)):
            since = now_ms - span
            questions: dict[str, Callable[[], Any]] = {
                "summary": functools.partial(stats.summary, since, now_ms),
                "timeseries": functools.partial(stats.timeseries, since, now_ms),
                "chains": functools.partial(stats.chains, since, now_ms),
                "providers": functools.partial(provider_stats.providers, since, now_ms),
                "requests": functools.partial(listing.requests, since, now_ms, limit=100),
            }
            for name, call in questions.items():
                runs = timed(call, args.runs)
                results.append(
                    {
                        "database": kind,
                        "question": name,
                        "range": label,
                        "median_ms": statistics.median(runs),
                        "min_ms": min(runs),
                        "max_ms": max(runs),
                        "goal": name in GOAL_QUESTIONS,
                    }
                )
                say(f"  {kind} {name} {label}: {statistics.median(runs):.1f} ms")

    print(
        f"{'database':<10}{'question':<12}{'range':>6}{'median ms':>11}{'min':>9}{'max':>9}  goal"
    )
    for r in results:
        verdict = ("ok" if r["median_ms"] < GOAL_MS else "MISSED") if r["goal"] else "-"
        print(
            f"{r['database']:<10}{r['question']:<12}{r['range']:>6}{r['median_ms']:>11.1f}"
            f"{r['min_ms']:>9.1f}{r['max_ms']:>9.1f}  {verdict}"
        )
    missed = [r for r in results if r["goal"] and r["median_ms"] >= GOAL_MS]
    outcome = "met" if not missed else f"missed by {len(missed)} of them"
    print(f"\ngoal: {', '.join(GOAL_QUESTIONS)} under {GOAL_MS:.0f} ms: {outcome}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
