"""The real telemetry writer's rows and rollup, read back by the stats queries."""

from __future__ import annotations

import pytest

from chain429.requestlog import listing, provider_stats, stats
from chain429.requestlog.records import AttemptRecord, RequestRecord
from chain429.requestlog.writer import Telemetry
from fixtures import stats_data
from fixtures.stats_data import DAY, HOUR, NOW_MS


def as_record(row, trail):
    fields = {k: v for k, v in row.items() if k not in ("time_ms",)}
    # +0.5 ms: the writer truncates started_at * 1000, and x / 1000 * 1000 may land just below x.
    return RequestRecord(
        started_at=(row["time_ms"] + 0.5) / 1000,
        trail=[AttemptRecord(**{k: v for k, v in a.items() if k != "request"}) for a in trail],
        **fields,
    )


@pytest.mark.parametrize("kind", stats_data.KINDS)
def test_what_the_telemetry_writer_keeps_reads_back_exactly(kind, tmp_path):
    """The real writer's rollups and rows, read back as rollup + edges: the same numbers."""
    requests, attempts = stats_data.generate(count=600, seed=99)
    trails: dict[str, list] = {}
    for a in attempts:
        trails.setdefault(a["request"], []).append(a)
    with stats_data.open_db(kind, tmp_path) as db:
        telemetry = Telemetry(db, retention_days=0, batch_rows=97).start()
        for row in requests:
            assert telemetry.submit(as_record(row, trails.get(row["id"], [])))
        assert telemetry.stop()
        assert telemetry.written == len(requests)
        for since, until in [(NOW_MS - DAY, NOW_MS), (NOW_MS - 9 * DAY - 7, NOW_MS - HOUR + 3)]:
            rows = stats_data.in_range(requests, since, until)
            want = stats_data.totals(rows)
            got = stats.summary(since, until)
            for name in ("requests", "successes", "errors", "attempts", "tokens"):
                assert got[name] == want[name], name
            assert got["latency_ms"] == pytest.approx(stats_data.expected_latency(rows))
            want_attempts = stats_data.attempt_outcomes(requests, attempts, since, until)
            data = provider_stats.providers(since, until)["data"]
            assert {p["provider"]: p["attempts"] for p in data if p["provider"]} == want_attempts
            for entry in data:
                mine = [r for r in rows if r["provider"] == entry["provider"]]
                assert entry["requests"] == len(mine)
        # A trail of skips and calls reads back whole and in order: the writer keeps the
        # skips in `requests.skips` and the calls as rows (migration 8).
        fields = ("order", "provider", "model", "outcome", "status", "reason")
        mixed = [
            rid
            for rid, trail in trails.items()
            if {a["outcome"].startswith("skip:") for a in trail} == {True, False}
        ]
        assert len(mixed) > 20
        for rid in mixed:
            detail = listing.request_detail(rid)
            want = [tuple(a[f] for f in fields) for a in trails[rid]]
            assert [tuple(step[f] for f in fields) for step in detail["trail"]] == want
