"""A chain whose first entries are known exhausted: each request skips them alike, and
whatever ends or changes one of those skips is seen by the very next request.

The walk remembers the leading skips it found (chain429.routing.known_skips) so
that later requests need not ask about each entry again; these tests hold it to
answering exactly as asking would: the same trace, the same logged trail, and
no stale skip after a clear, a pause, a resume, a reload or the end of a cooldown.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from chain429.config.loader import load_config
from chain429.fakes.provider import Reply
from chain429.server.app import create_app
from chain429.server.serving import ServerThread, open_request_log
from fixtures.servers import ADMIN, HELLO, PROXY

CONFIG = """\
version: 1
settings:
  apiKeys: [proxy-key]
  adminKeys: [admin-key]
  defaultChain: main
  dbPath: {db}
providers:
  - {{id: daily, type: generic-openai, baseUrl: '{daily}'}}
  - {{id: cool, type: generic-openai, baseUrl: '{cool}'}}
  - {{id: spare, type: generic-openai, baseUrl: '{spare}'}}
chains:
  - name: main
    entries:
      - {{provider: daily, model: d, rateLimits: {{requestsPerDay: {per_day}}}}}
      - {{provider: cool, model: c}}
      - {{provider: spare, model: s}}
"""
# What every request says once `daily` has spent its day and `cool` cools down.
BOTH_SKIPPED = "daily/d=skip:limited,cool/c=skip:cooldown,spare/s=200"


class Served:
    def __init__(self, path: Path, server: ServerThread, fakes: dict) -> None:
        self.path, self.server, self.fakes = path, server, fakes

    def send(self, route: str, body: dict | None = None, headers=ADMIN) -> httpx.Response:
        method = "GET" if body is None else "POST"
        url = self.server.url + route
        return httpx.request(method, url, headers=headers, json=body, timeout=10)

    def ask(self) -> httpx.Response:
        answer = self.send("/v1/chat/completions", {"model": "main", "messages": HELLO}, PROXY)
        assert answer.status_code == 200, answer.text
        return answer

    def trace(self) -> str:
        return self.ask().headers["x-429chain-trace"]

    def calls(self) -> dict[str, int]:
        return {name: len(fake.requests) for name, fake in self.fakes.items()}


@pytest.fixture
def served(fake, tmp_path):
    fakes = {name: fake(name) for name in ("daily", "cool", "spare")}
    path = tmp_path / "chain429.yaml"
    path.write_text(text(fakes, tmp_path))
    server = start(path)
    s = Served(path, server, fakes)
    # `daily` spends its one request of the day; `cool` answers a 429 for an hour.
    fakes["cool"].script(Reply(429, headers={"retry-after": "3600"}))
    assert s.trace() == "daily/d=200"
    assert s.trace() == "daily/d=skip:limited,cool/c=429,spare/s=200"
    yield s
    server.stop()


def text(fakes: dict, folder: Path, per_day: int = 1) -> str:
    urls = {name: fake.base_url for name, fake in fakes.items()}
    return CONFIG.format(per_day=per_day, db=folder / "log.db", **urls)


def start(path: Path) -> ServerThread:
    config = load_config(path)
    app = create_app(config, config_path=path, telemetry=open_request_log(config))
    return ServerThread(app).start()


def test_every_request_skips_the_known_entries_alike_and_asks_none_of_them(served):
    s = served
    before = s.calls()
    answers = [s.ask() for _ in range(5)]
    assert {a.headers["x-429chain-trace"] for a in answers} == {BOTH_SKIPPED}
    assert {a.headers["x-429chain-attempts"] for a in answers} == {"1"}
    after = s.calls()
    assert after["daily"] == before["daily"] and after["cool"] == before["cool"]
    assert after["spare"] == before["spare"] + 5
    # Every skip is counted, each request's (the fixture's second request skipped `daily`).
    metrics = s.send("/metrics").text
    assert 'chain429_skips_total{model="d",provider="daily",reason="limited"} 6.0' in metrics
    assert 'chain429_skips_total{model="c",provider="cool",reason="cooldown"} 5.0' in metrics
    assert 'chain429_attempts_total{model="s",outcome="200",provider="spare"} 6.0' in metrics
    # The log keeps each request's whole trail, reasons included.
    for answer in (answers[0], answers[-1]):
        rid = answer.headers["x-request-id"]
        deadline = time.monotonic() + 5
        while (detail := s.send(f"/v1/stats/requests/{rid}")).status_code == 404:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert detail.status_code == 200, detail.text
        trail = [(a["order"], a["outcome"], a["reason"]) for a in detail.json()["trail"]]
        assert trail[0] == (1, "skip:limited", "requestsPerDay 1 reached")
        assert trail[1][:2] == (2, "skip:cooldown") and trail[2][:2] == (3, "200")


def test_a_cleared_cooldown_is_asked_by_the_next_request(served):
    s = served
    assert s.trace() == BOTH_SKIPPED
    cleared = s.send("/v1/admin/limits/clear", {"provider": "cool", "model": "c"})
    assert cleared.status_code == 200, cleared.text
    assert s.trace() == "daily/d=skip:limited,cool/c=200"


def test_a_pause_and_a_resume_of_a_known_skipped_entry_show_at_once(served):
    s = served
    assert s.trace() == BOTH_SKIPPED
    paused = s.send("/v1/admin/entries/pause", {"provider": "daily", "model": "d"})
    assert paused.status_code == 200, paused.text
    assert s.trace() == "daily/d=skip:paused,cool/c=skip:cooldown,spare/s=200"
    assert s.send("/v1/admin/entries/resume", {"provider": "daily", "model": "d"}).is_success
    assert s.trace() == BOTH_SKIPPED


def test_a_reload_that_raises_the_limit_lets_the_next_request_ask_it(served):
    s = served
    assert s.trace() == BOTH_SKIPPED
    s.path.write_text(text(s.fakes, s.path.parent, per_day=5))
    reloaded = s.send("/v1/admin/reload", {})
    assert reloaded.status_code == 200 and reloaded.json()["reloaded"], reloaded.text
    assert s.trace() == "daily/d=200"


def test_a_cooldown_that_ends_is_probed_by_the_next_request(fake, tmp_path):
    fakes = {name: fake(name) for name in ("daily", "cool", "spare")}
    path = tmp_path / "chain429.yaml"
    path.write_text(text(fakes, tmp_path))
    server = start(path)
    try:
        s = Served(path, server, fakes)
        fakes["cool"].script(Reply(429, headers={"retry-after": "1"}))
        assert s.trace() == "daily/d=200"
        assert s.trace() == "daily/d=skip:limited,cool/c=429,spare/s=200"
        assert s.trace() == BOTH_SKIPPED
        assert s.trace() == BOTH_SKIPPED
        time.sleep(1.2)  # the 429's second, and its jitter (at most 5% of it)
        assert s.trace() == "daily/d=skip:limited,cool/c=200"
    finally:
        server.stop()
