"""`GET /v1/stats/*` through a real server on 127.0.0.1, over a real SQLite request log."""

from __future__ import annotations

import time

import httpx
import pytest

from chain429.config.model import Config
from chain429.requestlog import database as chain_database
from chain429.server.app import create_app
from chain429.server.serving import ServerThread
from chain429.upstream.times import iso_ms as iso
from fixtures import stats_data
from fixtures.stats_data import DAY, HOUR

PROXY_KEY = "stats-proxy-key"
ADMIN_KEY = "stats-admin-key"
NOW_MS = int(time.time() * 1000)
ROUTES = [
    "/v1/stats/summary",
    "/v1/stats/providers",
    "/v1/stats/chains",
    "/v1/stats/requests",
    "/v1/stats/timeseries",
    "/v1/stats/requests/req_x",
]


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    # Around the real clock, so the default range (the last 24h) has rows in it.
    requests, attempts = stats_data.generate(count=800, seed=7, now_ms=NOW_MS - 5_000)
    with stats_data.open_db("sqlite", tmp_path_factory.mktemp("routes")) as db:
        stats_data.load(db, requests, attempts)
        yield stats_data.Dataset(db, requests, attempts)


@pytest.fixture
def serve(log):
    started: list[ServerThread] = []

    def start(settings=None, *, database=log.db) -> httpx.Client:
        config = Config.model_validate(
            {
                "version": 1,
                "settings": settings or {"apiKeys": [PROXY_KEY], "adminKeys": [ADMIN_KEY]},
                "providers": [
                    {"id": "a", "type": "generic-openai", "baseUrl": "http://127.0.0.1:9/v1"}
                ],
                "chains": [{"name": "main", "entries": [{"provider": "a", "model": "m"}]}],
            }
        )
        app = create_app(config)
        app.ctx.database = database
        if database is not None:
            chain_database.bind(database)
        server = ServerThread(app).start()
        started.append(server)
        return httpx.Client(base_url=server.url, timeout=10)

    yield start
    for server in started:
        server.stop()


def admin(key=ADMIN_KEY):
    return {"authorization": f"Bearer {key}"}


def error_of(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# -- who may ask -------------------------------------------------------------


@pytest.mark.parametrize("path", ROUTES)
def test_no_key_is_401_and_proxy_key_is_403(serve, path):
    http = serve()
    assert error_of(http.get(path), 401)["code"] == "invalid_api_key"
    assert error_of(http.get(path, headers=admin("wrong")), 401)["code"] == "invalid_api_key"
    forbidden = error_of(http.get(path, headers=admin(PROXY_KEY)), 403)
    assert forbidden["type"] == "permission_error"
    # Authentication comes before parameters: a bad one tells an outsider nothing.
    assert http.get(path, params={"limit": "0"}).status_code == 401


def test_without_admin_keys_the_proxy_key_is_admin(serve):
    http = serve({"apiKeys": [PROXY_KEY]})
    assert http.get("/v1/stats/summary", headers=admin(PROXY_KEY)).status_code == 200


@pytest.mark.parametrize("path", ROUTES)
def test_log_off_is_503_in_openai_shape(serve, path):
    http = serve(database=None)
    assert error_of(http.get(path), 401)["code"] == "invalid_api_key"
    error = error_of(http.get(path, headers=admin()), 503)
    assert error["code"] == "request_log_disabled"
    assert error["type"] == "server_error"


# -- shapes ------------------------------------------------------------------


def test_summary_shape_and_default_range(serve, log):
    body = serve().get("/v1/stats/summary", headers=admin()).json()
    assert body["object"] == "stats.summary"
    assert NOW_MS - 1000 <= body["until_ms"] <= int(time.time() * 1000)
    assert body["until_ms"] - body["since_ms"] == DAY
    want = stats_data.totals(stats_data.in_range(log.requests, body["since_ms"], body["until_ms"]))
    assert body["requests"] == want["requests"] > 0
    assert body["errors"] == want["errors"]
    assert body["tokens"] == want["tokens"]
    assert set(body["latency_ms"]) == {"avg", "p50", "p95"}
    assert 0 < body["error_rate"] < 1


def test_providers_and_chains_shape(serve):
    http = serve()
    providers = http.get("/v1/stats/providers", params={"since": "7d"}, headers=admin()).json()
    assert providers["object"] == "stats.providers"
    entry = providers["data"][0]
    assert set(entry) == {
        "provider",
        "requests",
        "successes",
        "errors",
        "tokens",
        "latency_ms",
        "attempts",
    }
    assert set(entry["attempts"]) == {"calls", "skips", "outcomes"}
    nobody = providers["data"][-1]
    assert nobody["provider"] is None and nobody["errors"] == nobody["requests"] > 0

    chains = http.get("/v1/stats/chains", params={"since": "7d"}, headers=admin()).json()
    assert chains["object"] == "stats.chains"
    assert [c["chain"] for c in chains["data"]] == ["fast", "smart", None]
    assert set(chains["data"][0]) == {
        "chain",
        "requests",
        "successes",
        "errors",
        "error_rate",
        "tokens",
        "latency_ms",
    }


@pytest.mark.parametrize(
    ("params", "bucket", "points"),
    [
        ({"since": "6h"}, "5m", 72),
        ({"since": "2d"}, "1h", 48),
        ({"since": "30d"}, "1d", 30),
        ({"since": "3h", "bucket": "1h"}, "1h", 3),
    ],
)
def test_timeseries_buckets(serve, params, bucket, points):
    body = serve().get("/v1/stats/timeseries", params=params, headers=admin()).json()
    assert body["object"] == "stats.timeseries"
    assert body["bucket"] == bucket
    # The first bucket is aligned to the clock, so an unaligned range touches one more.
    assert points <= len(body["data"]) <= points + 1
    point = body["data"][-1]
    assert set(point) == {"start_ms", "start", "requests", "errors", "tokens", "latency_ms"}
    assert set(point["latency_ms"]) == {"p50", "p95"}


def test_requests_pages_walk_every_row_once_and_detail_has_the_trail(serve, log):
    http = serve()
    since, until = NOW_MS - 2 * DAY, NOW_MS
    params = {"since": iso(since), "until": iso(until), "limit": "50", "chain": "fast"}
    seen, cursor = [], None
    while True:
        page = http.get(
            "/v1/stats/requests",
            params={**params, **({"cursor": cursor} if cursor else {})},
            headers=admin(),
        ).json()
        assert page["object"] == "list"
        seen += [row["id"] for row in page["data"]]
        if not (cursor := page["next_cursor"]):
            break
    rows = [r for r in stats_data.in_range(log.requests, since, until) if r["chain"] == "fast"]
    want = [r["id"] for r in sorted(rows, key=lambda r: (r["time_ms"], r["id"]), reverse=True)]
    assert seen == want and len(seen) > 100

    exhausted = next(r for r in rows if r["outcome"] == "all_providers_exhausted")
    detail = http.get(f"/v1/stats/requests/{exhausted['id']}", headers=admin()).json()
    assert detail["object"] == "stats.request"
    assert detail["provider"] is None and detail["status"] == 503
    assert [a["provider"] for a in detail["trail"]] == ["groq", "cerebras"]
    assert detail["trail"][-1]["outcome"] == "429"


def test_one_provider_or_chain_by_429chain_paths(serve):
    http = serve()
    listed = http.get("/v1/stats/providers", params={"since": "7d"}, headers=admin()).json()
    first = listed["data"][0]
    one = http.get(
        f"/v1/stats/providers/{first['provider']}", params={"since": "7d"}, headers=admin()
    ).json()
    assert one["object"] == "stats.provider"
    assert {k: one[k] for k in first} == first
    chain = http.get("/v1/stats/chains/fast", params={"since": "7d"}, headers=admin()).json()
    assert chain["chain"] == "fast" and chain["requests"] > 0
    missing = http.get("/v1/stats/chains/nope", params={"since": "7d"}, headers=admin())
    assert error_of(missing, 404)["code"] == "not_found"


def test_unknown_request_is_404_in_openai_shape(serve):
    error = error_of(serve().get("/v1/stats/requests/req_nope", headers=admin()), 404)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "not_found"
    assert error["param"] == "request_id"


def test_status_filter(serve, log):
    http = serve()
    page = http.get(
        "/v1/stats/requests", params={"status": "503", "limit": "1000"}, headers=admin()
    ).json()
    assert page["data"] and {row["status"] for row in page["data"]} == {503}


# -- bad parameters ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "param"),
    [
        ("/v1/stats/summary", "since=yesterday", "since"),
        ("/v1/stats/summary", "until=24", "until"),
        ("/v1/stats/summary", "since=1h&until=2h", "since"),
        ("/v1/stats/summary", "since=", "since"),
        ("/v1/stats/summary", "since=1h&since=2h", "since"),
        ("/v1/stats/summary", "chain=fast", "chain"),  # not a filter here
        ("/v1/stats/providers", "until=2026-02-30", "until"),
        ("/v1/stats/chains", "since=-1d", "since"),
        ("/v1/stats/requests", "limit=0", "limit"),
        ("/v1/stats/requests", "limit=1001", "limit"),
        ("/v1/stats/requests", "limit=ten", "limit"),
        ("/v1/stats/requests", "status=ok", "status"),
        ("/v1/stats/requests", "status=-893695484875275703934779392", "status"),  # was a 500
        ("/v1/stats/requests", "cursor=%25%25bad", "cursor"),
        ("/v1/stats/requests", "provdier=groq", "provdier"),
        ("/v1/stats/requests", "outcome=sucess", "outcome"),  # a typo is not "no requests"
        ("/v1/stats/timeseries", "bucket=2h", "bucket"),
        ("/v1/stats/timeseries", "since=7d&bucket=5m", "bucket"),
        ("/v1/stats/timeseries", "since=3650d&bucket=1h", "bucket"),
        ("/v1/stats/requests/req_x", "since=1h", "since"),
    ],
)
def test_bad_parameter_is_400_naming_it(serve, path, query, param):
    error = error_of(serve().get(f"{path}?{query}", headers=admin()), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param in error["message"]


def test_explicit_iso_range_matches_brute_force(serve, log):
    since, until = NOW_MS - 3 * DAY + 12_345, NOW_MS - HOUR - 999
    body = (
        serve()
        .get(
            "/v1/stats/summary", params={"since": iso(since), "until": iso(until)}, headers=admin()
        )
        .json()
    )
    want = stats_data.totals(stats_data.in_range(log.requests, since, until))
    assert (body["since_ms"], body["until_ms"]) == (since, until)
    assert body["requests"] == want["requests"]
    assert body["attempts"] == want["attempts"]
