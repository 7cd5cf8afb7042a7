"""The stats queries against a real SQLite file and a real PostgreSQL, checked by brute force."""

from __future__ import annotations

import datetime as dt
import itertools
import json

import pytest

from chain429.requestlog import database as chain_database
from chain429.requestlog import listing, provider_stats, stats
from chain429.requestlog.tables import HourlyAttemptRollup, HourlyRollup
from fixtures import stats_data
from fixtures.stats_data import DAY, HOUR, NOW_MS


@pytest.fixture(scope="module", params=stats_data.KINDS)
def dataset(request, tmp_path_factory):
    requests, attempts = stats_data.generate()
    with stats_data.open_db(request.param, tmp_path_factory.mktemp("stats")) as db:
        stats_data.load(db, requests, attempts)
        yield stats_data.Dataset(db, requests, attempts)


@pytest.fixture(autouse=True)
def bound(dataset):
    # The models follow one global proxy; other modules may have pointed it elsewhere.
    chain_database.bind(dataset.db)
    return dataset


HOUR_START = NOW_MS // HOUR * HOUR
# Ranges that start/end on and off hour boundaries, inside one hour, across days.
RANGES = [
    pytest.param(NOW_MS - DAY, NOW_MS, id="24h"),
    pytest.param(NOW_MS - 7 * DAY, NOW_MS, id="7d"),
    pytest.param(NOW_MS - 30 * DAY, NOW_MS + DAY, id="30d-into-future"),
    pytest.param(HOUR_START - 5 * HOUR, HOUR_START, id="whole-hours-only"),
    pytest.param(NOW_MS - 20 * 60_000, NOW_MS, id="inside-one-hour"),
    pytest.param(NOW_MS - 3 * DAY - 1234, NOW_MS - 2 * DAY + 98765, id="unaligned-past"),
    pytest.param(HOUR_START - 1, HOUR_START + 1, id="2ms-across-an-hour"),
    pytest.param(NOW_MS + HOUR, NOW_MS + 2 * HOUR, id="empty"),
]


@pytest.mark.parametrize(("since", "until"), RANGES)
def test_summary_from_rollup_and_edges_equals_brute_force(dataset, since, until):
    rows = stats_data.in_range(dataset.requests, since, until)
    want = stats_data.totals(rows)
    got = stats.summary(since, until)
    assert got["object"] == "stats.summary"
    assert (got["since_ms"], got["until_ms"]) == (since, until)
    for name in ("requests", "successes", "errors", "attempts", "tokens"):
        assert got[name] == want[name], name
    assert got["error_rate"] == (round(want["errors"] / len(rows), 4) if rows else 0.0)
    assert got["latency_ms"] == pytest.approx(stats_data.expected_latency(rows))


def test_summary_percentiles_land_in_the_true_bucket(dataset):
    since, until = NOW_MS - 7 * DAY, NOW_MS
    latencies = sorted(r["latency_ms"] for r in stats_data.in_range(dataset.requests, since, until))
    got = stats.summary(since, until)["latency_ms"]
    bounds = (0.0, *stats.LATENCY_BUCKETS_MS)
    for q, name in ((0.5, "p50"), (0.95, "p95")):
        true = latencies[int(q * len(latencies)) - 1]
        bucket = stats_data.latency_bucket(true)
        # The estimate is off by at most the width of the bucket the true value is in.
        assert bounds[bucket] <= got[name] <= bounds[bucket + 1], (name, true, got[name])


@pytest.mark.parametrize(("since", "until"), RANGES[:3] + RANGES[5:6])
def test_chains(dataset, since, until):
    rows = stats_data.in_range(dataset.requests, since, until)
    got = {c["chain"]: c for c in stats.chains(since, until)["data"]}
    assert set(got) == {r["chain"] for r in rows}
    for chain, entry in got.items():
        mine = [r for r in rows if r["chain"] == chain]
        want = stats_data.totals(mine)
        for name in ("requests", "successes", "errors", "tokens"):
            assert entry[name] == want[name], (chain, name)
        assert entry["latency_ms"] == pytest.approx(stats_data.expected_latency(mine))


@pytest.mark.parametrize(("since", "until"), RANGES)
def test_clients_from_rollup_and_edges_equal_brute_force(dataset, since, until):
    rows = stats_data.in_range(dataset.requests, since, until)
    answer = stats.clients(since, until)
    assert answer["object"] == "stats.clients"
    got = {c["client"]: c for c in answer["data"]}
    assert set(got) == {r["client"] for r in rows}
    if None in got:
        assert answer["data"][-1]["client"] is None  # the anonymous callers come last
    for client, entry in got.items():
        mine = [r for r in rows if r["client"] == client]
        want = stats_data.totals(mine)
        for name in ("requests", "successes", "errors", "tokens"):
            assert entry[name] == want[name], (client, name)
        assert entry["latency_ms"] == pytest.approx(stats_data.expected_latency(mine))
        assert entry["rate_limited"] == 0


def test_requests_filter_by_client(dataset):
    since, until = NOW_MS - 2 * DAY, NOW_MS
    page = listing.requests(since, until, client="ben", limit=1000)["data"]
    want = [r for r in stats_data.in_range(dataset.requests, since, until) if r["client"] == "ben"]
    assert {r["id"] for r in page} == {r["id"] for r in want} and page
    anonymous = listing.requests(since, until, client=listing.NO_CLIENT, limit=1000)["data"]
    want = [r for r in stats_data.in_range(dataset.requests, since, until) if r["client"] is None]
    assert {r["id"] for r in anonymous} == {r["id"] for r in want} and anonymous


@pytest.mark.parametrize(("since", "until"), RANGES[:3])
def test_failed_requests_are_attributed_to_the_request_not_the_last_provider(dataset, since, until):
    rows = stats_data.in_range(dataset.requests, since, until)
    data = provider_stats.providers(since, until)["data"]
    got = {p["provider"]: p for p in data}
    assert data[-1]["provider"] is None  # "nobody answered" comes last
    unanswered = [r for r in rows if r["provider"] is None]
    assert got[None]["requests"] == len(unanswered)
    assert got[None]["errors"] == len(unanswered)
    assert got[None]["attempts"]["calls"] == 0
    exhausted = sum(r["outcome"] == "all_providers_exhausted" for r in rows)
    assert exhausted > 0
    for provider, entry in got.items():
        if provider is None:
            continue
        mine = [r for r in rows if r["provider"] == provider]
        want = stats_data.totals(mine)
        assert (entry["requests"], entry["successes"], entry["errors"]) == (
            want["requests"],
            want["successes"],
            want["errors"],
        ), provider
        # cerebras/openrouter end every exhausted trail; none of those count against them.
        assert all(r["outcome"] != "all_providers_exhausted" for r in mine)


NO_ATTEMPTS = {"calls": 0, "skips": 0, "outcomes": {}}
NO_LATENCY = {"avg": None, "p50": None, "p95": None}


@pytest.mark.parametrize(("since", "until"), RANGES)
def test_providers_from_rollups_and_edges_equal_brute_force(dataset, since, until):
    rows = stats_data.in_range(dataset.requests, since, until)
    attempts = stats_data.attempt_outcomes(dataset.requests, dataset.attempts, since, until)
    got = provider_stats.providers(since, until)
    assert got["object"] == "stats.providers"
    assert (got["since_ms"], got["until_ms"]) == (since, until)
    entries = {p["provider"]: p for p in got["data"]}
    assert len(entries) == len(got["data"])
    assert set(entries) == {r["provider"] for r in rows} | set(attempts)
    for provider, entry in entries.items():
        mine = [r for r in rows if r["provider"] == provider]
        want = stats_data.totals(mine)
        for name in ("requests", "successes", "errors", "tokens"):
            assert entry[name] == want[name], (provider, name)
        latency = stats_data.expected_latency(mine) if mine else NO_LATENCY
        assert entry["latency_ms"] == pytest.approx(latency), provider
        assert entry["attempts"] == attempts.get(provider, NO_ATTEMPTS), provider


def test_provider_attempts_come_from_the_trails(dataset):
    since, until = NOW_MS - 7 * DAY, NOW_MS
    want = stats_data.attempt_outcomes(dataset.requests, dataset.attempts, since, until)
    got = {p["provider"]: p["attempts"] for p in provider_stats.providers(since, until)["data"]}
    for provider, attempts in want.items():
        assert got[provider] == attempts
    assert got["cerebras"]["outcomes"]["429"] > 0
    assert got["groq"]["outcomes"]["skip:cooldown"] > 0
    assert got[None] == NO_ATTEMPTS  # nobody answered: no trail is filed under null


def newest_first(rows):
    return sorted(rows, key=lambda r: (r["time_ms"], r["id"]), reverse=True)


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"chain": "fast"},
        {"provider": "groq", "status": 200},
        {"outcome": "all_providers_exhausted"},
        {"chain": "smart", "outcome": "nope"},
    ],
)
def test_cursor_pagination_walks_every_row_exactly_once(dataset, filters):
    since, until = NOW_MS - 4 * DAY, NOW_MS
    want = [
        r["id"]
        for r in newest_first(stats_data.in_range(dataset.requests, since, until))
        if all(r[k] == v for k, v in filters.items())
    ]
    seen, cursor, pages = [], None, 0
    while True:
        page = listing.requests(since, until, limit=37, cursor=cursor, **filters)
        assert len(page["data"]) <= 37
        seen += [row["id"] for row in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        assert page["has_more"] is (cursor is not None)
        if cursor is None:
            break
    assert seen == want
    assert pages == max(1, -(-len(want) // 37))


def test_ties_in_time_are_ordered_by_id_across_pages(dataset):
    tie = NOW_MS - 3 * HOUR
    want = sorted((r["id"] for r in dataset.requests if r["time_ms"] == tie), reverse=True)
    assert len(want) >= 12
    seen, cursor = [], None
    while True:
        page = listing.requests(tie, tie + 1, limit=5, cursor=cursor)
        seen += [row["id"] for row in page["data"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == want


def test_request_rows_and_detail_with_trail(dataset):
    exhausted = next(r for r in dataset.requests if r["outcome"] == "all_providers_exhausted")
    page = listing.requests(exhausted["time_ms"], exhausted["time_ms"] + 1, limit=1000)
    row = next(r for r in page["data"] if r["id"] == exhausted["id"])
    assert row["provider"] is None and row["status"] == 503
    assert row["time"].endswith("Z")
    assert set(row) >= {"latency_ms", "prompt_tokens", "attempts", "stream", "key_label"}
    detail = listing.request_detail(exhausted["id"])
    assert detail["id"] == exhausted["id"] and detail["provider"] is None
    trail = [a for a in dataset.attempts if a["request"] == exhausted["id"]]
    assert [(a["order"], a["provider"], a["outcome"]) for a in detail["trail"]] == [
        (a["order"], a["provider"], a["outcome"]) for a in trail
    ]
    assert listing.request_detail("req_unknown") is None


@pytest.mark.parametrize("limit", [0, -1, 1001, "ten"])
def test_limit_out_of_range_names_limit(dataset, limit):
    with pytest.raises(ValueError, match="limit") as caught:
        listing.requests(NOW_MS - DAY, NOW_MS, limit=limit)
    assert caught.value.param == "limit"


def test_bad_cursor_names_cursor(dataset):
    with pytest.raises(ValueError, match="cursor"):
        listing.requests(NOW_MS - DAY, NOW_MS, cursor="%%%not-a-cursor")


@pytest.mark.parametrize(
    ("since", "until", "bucket", "width"),
    [
        (NOW_MS - 3 * HOUR, NOW_MS, None, 300_000),
        (NOW_MS - 6 * HOUR, NOW_MS, None, 300_000),
        (NOW_MS - 2 * DAY, NOW_MS, None, HOUR),
        (NOW_MS - 7 * DAY, NOW_MS, None, HOUR),
        (NOW_MS - 9 * DAY - 777, NOW_MS, None, DAY),
        (NOW_MS - 9 * DAY, NOW_MS, "1h", HOUR),
        (NOW_MS - DAY, NOW_MS, "5m", 300_000),
        (NOW_MS - 2 * HOUR, NOW_MS, "1d", DAY),
    ],
)
def test_timeseries_buckets_match_brute_force(dataset, since, until, bucket, width):
    got = stats.timeseries(since, until, bucket)
    assert got["bucket_ms"] == width
    points = got["data"]
    starts = [p["start_ms"] for p in points]
    assert starts[0] == since // width * width  # UTC-aligned, first one cut by the range
    assert all(b - a == width for a, b in itertools.pairwise(starts))
    assert starts[-1] < until <= starts[-1] + width
    for point in points:
        lo, hi = max(point["start_ms"], since), min(point["start_ms"] + width, until)
        rows = stats_data.in_range(dataset.requests, lo, hi)
        want = stats_data.totals(rows)
        assert point["requests"] == want["requests"], point["start"]
        assert point["errors"] == want["errors"]
        assert point["tokens"] == want["tokens"]
        latency = stats_data.expected_latency(rows)
        assert point["latency_ms"] == {"p50": latency["p50"], "p95": latency["p95"]}
    assert sum(p["requests"] for p in points) == len(
        stats_data.in_range(dataset.requests, since, until)
    )


@pytest.mark.parametrize(
    ("since", "until", "bucket"),
    [
        (NOW_MS - 3 * DAY, NOW_MS, "5m"),  # minute buckets read raw rows: short ranges only
        (NOW_MS - 400 * DAY, NOW_MS, "1h"),  # too many points
        (NOW_MS - DAY, NOW_MS, "2h"),
    ],
)
def test_timeseries_bad_bucket_names_bucket(dataset, since, until, bucket):
    with pytest.raises(ValueError) as caught:
        stats.timeseries(since, until, bucket)
    assert caught.value.param == "bucket"


def test_timeseries_over_decades_names_since(dataset):
    with pytest.raises(ValueError) as caught:
        stats.timeseries(0, NOW_MS)  # automatic 1d buckets: over 20,000 of them
    assert caught.value.param == "since"


# -- parameters (no database needed, but cheap to run under both) ------------

NOW_S = NOW_MS / 1000


def utc_ms(*args):
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("since", "until", "want"),
    [
        (None, None, (NOW_MS - DAY, NOW_MS)),
        ("7d", None, (NOW_MS - 7 * DAY, NOW_MS)),
        ("30m", "90s", (NOW_MS - 1_800_000, NOW_MS - 90_000)),
        ("2h", None, (NOW_MS - 2 * HOUR, NOW_MS)),
        ("2026-11-26T10:00:00Z", None, (utc_ms(2026, 11, 26, 10), NOW_MS)),
        ("2026-11-20", "2026-11-26", (utc_ms(2026, 11, 20), utc_ms(2026, 11, 26))),
        ("2026-11-26T11:00:00+01:00", None, (utc_ms(2026, 11, 26, 10), NOW_MS)),
        ("2026-11-26T10:00:00", None, (utc_ms(2026, 11, 26, 10), NOW_MS)),  # bare = UTC
        (
            None,
            "2026-11-26T00:00:00.500Z",
            (utc_ms(2026, 11, 25) + 500, utc_ms(2026, 11, 26) + 500),
        ),
    ],
)
def test_parse_range(since, until, want):
    assert stats.parse_range(since, until, NOW_S) == want


@pytest.mark.parametrize(
    ("since", "until", "param"),
    [
        ("yesterday", None, "since"),
        (None, "24", "until"),
        ("-5h", None, "since"),
        ("2026-13-01", None, "since"),
        ("1h", "2h", "since"),  # since after until
        ("2026-11-26", "2026-11-26", "since"),  # empty range
        ("99999999d", None, "since"),  # before 1970
        (None, "10000-01-01", "until"),
        ("1969-12-31", None, "since"),
    ],
)
def test_parse_range_errors_name_the_parameter(since, until, param):
    with pytest.raises(ValueError, match=f"^{param}: ") as caught:
        stats.parse_range(since, until, NOW_S)
    assert caught.value.param == param


def test_whole_hours_come_from_the_rollup_and_edges_from_raw_rows(dataset):
    """What keeps a 30-day summary fast: rows of whole hours are never scanned."""
    ghost_hour = HOUR_START - 2 * HOUR
    histogram = json.dumps([1000] + [0] * len(stats.LATENCY_BUCKETS_MS))
    with dataset.db.atomic() as txn:
        HourlyRollup.insert(
            hour_ms=ghost_hour,
            chain="ghost",
            outcome="success",
            requests=1000,
            latency_histogram=histogram,
        ).execute()
        around = (ghost_hour - 5, ghost_hour + HOUR + 5)  # the whole ghost hour, plus edges
        inside = (ghost_hour + 5, ghost_hour + HOUR - 5)  # within the hour: raw rows only
        got_around = stats.summary(*around)["requests"]
        got_inside = stats.summary(*inside)["requests"]
        ghost = stats.chains(*around)["data"]
        txn.rollback()
    assert got_around == len(stats_data.in_range(dataset.requests, *around)) + 1000
    assert got_inside == len(stats_data.in_range(dataset.requests, *inside))
    assert {"chain": "ghost", "requests": 1000}.items() <= next(
        c for c in ghost if c["chain"] == "ghost"
    ).items()


def test_whole_hours_of_attempts_come_from_the_attempt_rollup(dataset):
    """What keeps a 30-day `providers` fast: trails of whole hours are never joined."""
    ghost_hour = HOUR_START - 2 * HOUR
    with dataset.db.atomic() as txn:
        for outcome, count in (("429", 1000), ("skip:cooldown", 7)):
            HourlyAttemptRollup.insert(
                hour_ms=ghost_hour, provider="ghost", model="g", outcome=outcome, count=count
            ).execute()
        around = (ghost_hour - 5, ghost_hour + HOUR + 5)  # the whole ghost hour, plus edges
        inside = (ghost_hour + 5, ghost_hour + HOUR - 5)  # within the hour: raw trails only
        got_around = {p["provider"]: p for p in provider_stats.providers(*around)["data"]}
        got_inside = {p["provider"]: p for p in provider_stats.providers(*inside)["data"]}
        txn.rollback()
    ghost = got_around.pop("ghost")
    assert ghost["requests"] == 0
    assert ghost["attempts"] == {
        "calls": 1000,
        "skips": 7,
        "outcomes": {"429": 1000, "skip:cooldown": 7},
    }
    assert "ghost" not in got_inside
    for since, until, got in ((*around, got_around), (*inside, got_inside)):
        want = stats_data.attempt_outcomes(dataset.requests, dataset.attempts, since, until)
        assert {p: e["attempts"] for p, e in got.items() if p in want} == want
