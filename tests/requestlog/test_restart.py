"""A restart remembers cooldowns: a provider whose daily quota is gone is not asked again."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chain429.config.model import Config
from chain429.fakes.provider import Reply
from chain429.requestlog.database import migrate, open_database
from chain429.requestlog.tables import database_proxy
from chain429.requestlog.writer import Telemetry
from chain429.server.app import create_app
from chain429.server.serving import ServerThread
from fixtures.servers import PROXY_KEY, chain_config, provider_entry

HELLO = [{"role": "user", "content": "hi"}]
# Groq's `-requests` family is its daily quota: none left, back in 3 hours.
DAY_GONE = Reply.rate_limited(
    headers={
        "x-ratelimit-limit-requests": "1000",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "3h",
    }
)


@pytest.fixture(autouse=True)
def _restore_model_binding() -> Iterator[None]:
    saved = database_proxy.obj
    yield
    database_proxy.initialize(saved)


def start(config: Config, db_url: str) -> ServerThread:
    """A fresh process's worth of chain429: its own database handle, request log and app."""
    database = open_database(db_url)
    migrate(database)
    return ServerThread(create_app(config, telemetry=Telemetry(database))).start()


def chat(server: ServerThread) -> httpx.Response:
    headers = {"authorization": f"Bearer {PROXY_KEY}"}
    body: dict[str, Any] = {"model": "main", "messages": HELLO}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


def test_a_restart_does_not_re_ask_a_provider_whose_daily_quota_is_gone(fake, tmp_path):
    a = fake("a", default=DAY_GONE)
    b = fake("b")
    config = Config.model_validate(
        chain_config(
            [{**provider_entry("a", a), "type": "groq"}, provider_entry("b", b)],
            [("a", "model-a"), ("b", "model-b")],
        )
    )
    db = tmp_path / "chain429.db"
    url = f"sqlite:///{db}"

    first = start(config, url)
    try:
        answered = chat(first)
        before = first.call(first.app.ctx.state.snapshot(time.time()))
    finally:
        first.stop()
    assert answered.headers["x-429chain-trace"] == "a/model-a=429,b/model-b=200"
    (block,) = before
    assert block["key"] == "bucket:a/model-a"
    assert block["until"] > time.time() + 2.9 * 3600  # the day's quota: 3 hours, not a minute

    # Written at the stop, next to the request log.
    with sqlite3.connect(db) as conn:
        keys = {row[0] for row in conn.execute("SELECT key FROM provider_state")}
    assert "block:bucket:a/model-a" in keys

    second = start(config, url)
    try:
        again = chat(second)
        after = second.call(second.app.ctx.state.snapshot(time.time()))
    finally:
        second.stop()
    assert again.headers["x-429chain-trace"] == "a/model-a=skip:cooldown,b/model-b=200"
    assert len(a.requests) == 1  # asked once, before the restart; never after
    assert len(b.requests) == 2
    assert [(b["key"], b["until"]) for b in after] == [(block["key"], block["until"])]


def test_without_a_request_log_nothing_is_saved_or_restored(fake, proxy):
    a = fake("a", default=DAY_GONE)
    b = fake("b")
    config = chain_config(
        [{**provider_entry("a", a), "type": "groq"}, provider_entry("b", b)],
        [("a", "model-a"), ("b", "model-b")],
    )
    p = proxy(config)
    assert p.app.ctx.persister is None
    with p.http() as http:
        response = http.post("/v1/chat/completions", json={"model": "main", "messages": HELLO})
    assert response.headers["x-429chain-trace"] == "a/model-a=429,b/model-b=200"


def test_an_open_circuit_breaker_survives_a_restart(fake, tmp_path):
    a = fake("a", default=Reply.error(503, "down"))
    b = fake("b")
    config = Config.model_validate(
        chain_config(
            [provider_entry("a", a), provider_entry("b", b)],
            [("a", "model-a"), ("b", "model-b")],
            settings={"breaker": {"failures": 2, "baseMs": 60000}},
        )
    )
    url = f"sqlite:///{tmp_path / 'chain429.db'}"
    first = start(config, url)
    try:
        traces = [chat(first).headers["x-429chain-trace"] for _ in range(3)]
    finally:
        first.stop()
    assert traces == ["a/model-a=503,b/model-b=200"] * 2 + ["a/model-a=skip:breaker,b/model-b=200"]

    second = start(config, url)
    try:
        again = chat(second).headers["x-429chain-trace"]
        report = httpx.get(
            f"{second.url}/v1/ratelimits", headers={"authorization": f"Bearer {PROXY_KEY}"}
        ).json()
    finally:
        second.stop()
    assert again == "a/model-a=skip:breaker,b/model-b=200"
    assert len(a.requests) == 2  # never asked after the restart
    (entry,) = [e for e in report["entries"] if e["provider"] == "a"]
    assert entry["breaker"]["state"] == "open" and entry["breaker"]["failures"] == 2


def test_a_pause_survives_a_restart_and_ends_with_what_it_names(fake, tmp_path):
    a, b = fake("a"), fake("b")
    admin = {"authorization": "Bearer restart-admin-key"}

    def config(*providers: str) -> Config:
        fakes = {"a": a, "b": b}
        return Config.model_validate(
            chain_config(
                [provider_entry(p, fakes[p]) for p in providers],
                [(p, f"model-{p}") for p in providers],
                settings={"adminKeys": ["restart-admin-key"]},
            )
        )

    url = f"sqlite:///{tmp_path / 'chain429.db'}"
    first = start(config("a", "b"), url)
    try:
        paused = httpx.post(
            f"{first.url}/v1/admin/entries/pause", json={"provider": "a"}, headers=admin
        )
        assert paused.status_code == 200, paused.text
    finally:
        first.stop()

    second = start(config("a", "b"), url)
    try:
        assert chat(second).headers["x-429chain-trace"] == "a/model-a=skip:paused,b/model-b=200"
        report = httpx.get(
            f"{second.url}/v1/ratelimits", headers={"authorization": f"Bearer {PROXY_KEY}"}
        ).json()
    finally:
        second.stop()
    assert report["paused"] == [paused.json()["paused"]]  # who, and since when, kept too
    assert a.requests == []

    # Started without provider a, the pause ends; a is asked again once it is back.
    start(config("b"), url).stop()
    third = start(config("a", "b"), url)
    try:
        assert chat(third).headers["x-429chain-trace"] == "a/model-a=200"
    finally:
        third.stop()
