"""A small, deterministic request log for the stats tests, and the brute-force answers.

Rows are inserted directly; the hourly rollup is built here from the same rows
by the rule the telemetry writer follows (one row per hour, chain or "",
provider or "", outcome; latencies bucketed with bisect_left, i.e. into the
first bound they are at or below), and so is the attempt rollup (one row per
hour of the request, provider, model, outcome token), so "rollup + edges" can
be checked against a plain Python pass over the raw rows.
"""

from __future__ import annotations

import bisect
import json
import os
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peewee
import pytest

from chain429.requestlog import database as chain_database
from chain429.requestlog.stats import quantile
from chain429.requestlog.tables import (
    LATENCY_BUCKETS_MS,
    AttemptRow,
    HourlyAttemptRollup,
    HourlyRollup,
    RequestRow,
    database_proxy,
)

HOUR = 3_600_000
DAY = 86_400_000
# 2026-11-26T10:37:12.345Z: deliberately not on an hour, so default ranges have edges.
NOW_MS = 1_795_689_432_345
CHAINS = {"fast": ("groq", "cerebras"), "smart": ("gemini", "openrouter")}
# Latencies on bucket bounds check the "at or below" rule; the last is past every bound.
EDGE_LATENCIES = (5.0, 10.0, 250.0, 120000.0, 250000.0)
PG_DSN = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


@dataclass
class Dataset:
    db: peewee.Database
    requests: list[dict[str, Any]]
    attempts: list[dict[str, Any]]


def _request(rng: random.Random, number: int, time_ms: int) -> tuple[dict, list[dict]]:
    """One request and its trail; the outcome decides who (if anyone) answered."""
    rid = f"req_{time_ms:012x}{number:014x}"
    chain = rng.choice([*CHAINS, "fast", "fast", None])
    roll = rng.random()
    latency = rng.choice(EDGE_LATENCIES) if roll < 0.05 else round(rng.lognormvariate(6.5, 1.0), 3)
    base = {
        "id": rid,
        "time_ms": time_ms,
        "key_label": rng.choice(["key#1", "key#2", "admin#1"]),
        "chain": chain,
        "requested_model": chain or "gpt-nope",
        "stream": rng.random() < 0.3,
        "latency_ms": latency,
        "ttft_ms": None,
        "queued_ms": 0.0,
        "tokens_estimated": False,
    }
    if chain is None:  # unknown model: no chain, nobody asked
        return {
            **base,
            "provider": None,
            "model": None,
            "status": 404,
            "outcome": "model_not_found",
            "attempts": 0,
            "prompt_tokens": None,
            "completion_tokens": None,
            "total_tokens": None,
        }, []
    first, second = CHAINS[chain]
    trail: list[tuple[str, str, int | None]] = []
    if roll < 0.15:  # everything exhausted: the last tried must NOT get the blame
        trail = [(first, rng.choice(["429", "skip:cooldown"]), None), (second, "429", 429)]
        answered, status, outcome = None, 503, "all_providers_exhausted"
    else:
        if rng.random() < 0.4:
            trail.append((first, rng.choice(["429", "timeout", "skip:cooldown"]), None))
            answered = second
        else:
            answered = first
        if roll < 0.22:
            trail.append((answered, "400", 400))
            status, outcome = 400, "client_error"
        else:
            trail.append((answered, "200", 200))
            status = 200
            outcome = "stream_interrupted" if roll < 0.25 else "success"
    prompt = rng.randint(5, 500) if status == 200 else None
    completion = rng.randint(1, 300) if status == 200 else None
    attempts = []
    for order, (provider, token, upstream_status) in enumerate(trail, 1):
        skipped = token.startswith("skip:")
        attempts.append(
            {
                "request": rid,
                "order": order,
                "provider": provider,
                "model": f"{provider}-model",
                "outcome": token,
                "status": upstream_status
                or (None if skipped else int(token) if token.isdigit() else None),
                "latency_ms": None if skipped else 12.5,
                "cooldown_ms": 30_000 if token == "429" else None,
                "reason": "cooling down" if skipped else "",
            }
        )
    row = {
        **base,
        "provider": answered,
        "model": f"{answered}-model" if answered else None,
        "status": status,
        "outcome": outcome,
        "attempts": sum(1 for a in attempts if not a["outcome"].startswith("skip:")),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion
        if prompt is not None and completion is not None
        else None,
    }
    return row, attempts


def generate(
    count: int = 3000, seed: int = 429, now_ms: int = NOW_MS
) -> tuple[list[dict], list[dict]]:
    """Requests over the ten days before now_ms, with clumps on hour boundaries and equal times."""
    rng = random.Random(seed)
    times = [now_ms - rng.randrange(10 * DAY) for _ in range(count)]
    hour = now_ms // HOUR * HOUR
    times += [hour, hour - 1, hour - HOUR, hour - 5 * HOUR + 1, now_ms - 1, now_ms - DAY]
    times += [now_ms - 3 * HOUR] * 12  # ties: pagination must order them by id
    requests, attempts = [], []
    for number, time_ms in enumerate(times):
        row, trail = _request(rng, number, time_ms)
        requests.append(row)
        attempts.extend(trail)
    return requests, attempts


def latency_bucket(latency_ms: float) -> int:
    return bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)


def rollup_rows(requests: list[dict]) -> list[dict]:
    """HourlyRollup rows consistent with `requests`, as the telemetry writer keeps them."""
    rows: dict[tuple, dict] = {}
    for r in requests:
        key = (r["time_ms"] // HOUR * HOUR, r["chain"] or "", r["provider"] or "", r["outcome"])
        row = rows.setdefault(
            key,
            {
                "hour_ms": key[0],
                "chain": key[1],
                "provider": key[2],
                "outcome": key[3],
                "requests": 0,
                "errors": 0,
                "attempts": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "latency_sum_ms": 0.0,
                "latency_histogram": [0] * (len(LATENCY_BUCKETS_MS) + 1),
            },
        )
        row["requests"] += 1
        row["errors"] += r["outcome"] != "success"
        row["attempts"] += r["attempts"]
        row["prompt_tokens"] += r["prompt_tokens"] or 0
        row["completion_tokens"] += r["completion_tokens"] or 0
        row["latency_sum_ms"] += r["latency_ms"]
        row["latency_histogram"][latency_bucket(r["latency_ms"])] += 1
    return [
        {**row, "latency_histogram": json.dumps(row["latency_histogram"])} for row in rows.values()
    ]


def attempt_rollup_rows(requests: list[dict], attempts: list[dict]) -> list[dict]:
    """HourlyAttemptRollup rows consistent with the trails: hours are the requests'."""
    time_of = {r["id"]: r["time_ms"] for r in requests}
    rows: dict[tuple, dict] = {}
    for a in attempts:
        key = (time_of[a["request"]] // HOUR * HOUR, a["provider"], a["model"], a["outcome"])
        row = rows.setdefault(
            key,
            dict(zip(("hour_ms", "provider", "model", "outcome"), key, strict=True))
            | {"count": 0, "latency_sum_ms": 0.0},
        )
        row["count"] += 1
        row["latency_sum_ms"] += a["latency_ms"] or 0.0
    return list(rows.values())


def load(
    db: peewee.Database,
    requests: list[dict],
    attempts: list[dict],
    *,
    attempt_rollup: bool = True,
) -> None:
    """Insert the rows and both rollups (`attempt_rollup=False`: a schema before migration 2)."""
    with db.atomic():
        for i in range(0, len(requests), 500):
            RequestRow.insert_many(requests[i : i + 500]).execute()
        for i in range(0, len(attempts), 500):
            AttemptRow.insert_many(attempts[i : i + 500]).execute()
        rollup = rollup_rows(requests)
        for i in range(0, len(rollup), 500):
            HourlyRollup.insert_many(rollup[i : i + 500]).execute()
        if attempt_rollup:
            trails = attempt_rollup_rows(requests, attempts)
            for i in range(0, len(trails), 500):
                HourlyAttemptRollup.insert_many(trails[i : i + 500]).execute()


def skip_postgres() -> bool:
    return os.environ.get("CHAIN429_SKIP_POSTGRES") == "1"


# Every query test runs on both; PostgreSQL is skipped only when asked to.
KINDS = [
    "sqlite",
    pytest.param(
        "postgres",
        marks=pytest.mark.skipif(skip_postgres(), reason="CHAIN429_SKIP_POSTGRES=1"),
    ),
]


@contextmanager
def open_db(kind: str, tmp: Path) -> Iterator[peewee.Database]:
    """An empty, migrated request log: a SQLite file, or a private schema in PostgreSQL.

    The models' global proxy is pointed back where it was afterwards, so other
    test modules find it as they left it.
    """
    previous = database_proxy.obj
    try:
        if kind == "sqlite":
            db = chain_database.open_database(f"sqlite:///{tmp / 'log.db'}")
            chain_database.migrate(db)
            try:
                yield db
            finally:
                db.close()
        else:
            with _postgres_schema() as db:
                yield db
    finally:
        database_proxy.initialize(previous)


@contextmanager
def _postgres_schema() -> Iterator[peewee.Database]:
    # A schema of our own: other test modules may use the same `test` database at once.
    schema = f"stats_{uuid.uuid4().hex[:10]}"
    admin = peewee.PostgresqlDatabase("test", prefer_psycopg3=True, **PG_DSN)
    admin.execute_sql(f"CREATE SCHEMA {schema}")
    try:
        db = peewee.PostgresqlDatabase(
            "test", prefer_psycopg3=True, options=f"-c search_path={schema}", **PG_DSN
        )
        chain_database.bind(db)
        chain_database.migrate(db)
        try:
            yield db
        finally:
            db.close()
    finally:
        admin.execute_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


# -- brute force -------------------------------------------------------------


def expected_latency(rows):
    hist = histogram(rows)
    total = sum(r["latency_ms"] for r in rows)
    return {
        "avg": round(total / len(rows), 1) if rows else None,
        "p50": quantile(hist, 0.5),
        "p95": quantile(hist, 0.95),
    }


def in_range(requests: list[dict], since_ms: int, until_ms: int) -> list[dict]:
    return [r for r in requests if since_ms <= r["time_ms"] < until_ms]


def attempt_outcomes(
    requests: list[dict], attempts: list[dict], since_ms: int, until_ms: int
) -> dict[str, dict[str, Any]]:
    """Per provider, `providers()`'s "attempts" entry, from the trails of the requests in range."""
    ids = {r["id"] for r in in_range(requests, since_ms, until_ms)}
    counts: dict[str, dict[str, int]] = {}
    for a in attempts:
        if a["request"] in ids:
            outcomes = counts.setdefault(a["provider"], {})
            outcomes[a["outcome"]] = outcomes.get(a["outcome"], 0) + 1
    out = {}
    for provider, outcomes in counts.items():
        skips = sum(n for token, n in outcomes.items() if token.startswith("skip:"))
        out[provider] = {
            "calls": sum(outcomes.values()) - skips,
            "skips": skips,
            "outcomes": dict(sorted(outcomes.items())),
        }
    return out


def histogram(rows: list[dict]) -> list[int]:
    counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    for r in rows:
        counts[latency_bucket(r["latency_ms"])] += 1
    return counts


def totals(rows: list[dict]) -> dict[str, Any]:
    prompt = sum(r["prompt_tokens"] or 0 for r in rows)
    completion = sum(r["completion_tokens"] or 0 for r in rows)
    successes = sum(r["outcome"] == "success" for r in rows)
    return {
        "requests": len(rows),
        "successes": successes,
        "errors": len(rows) - successes,
        "attempts": sum(r["attempts"] for r in rows),
        "tokens": {"prompt": prompt, "completion": completion, "total": prompt + completion},
        "latency_sum_ms": sum(r["latency_ms"] for r in rows),
        "histogram": histogram(rows),
    }
