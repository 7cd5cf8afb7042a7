"""The circuit breaker (settings.breaker): an entry that keeps failing is skipped, probed, closed.

Seen from outside: what the fakes were called, the trace header, /v1/ratelimits,
/metrics, and the state a restarted server remembers.
"""

from __future__ import annotations

import threading
import time

from chain429.config.model import Config
from chain429.fakes.provider import Reply
from chain429.routing.memory_store import MemoryStateStore
from chain429.routing.outcome import CooldownPolicy, Kind, Outcome
from chain429.routing.runtime import build_snapshot
from fixtures.servers import chain_config, provider_entry

HELLO = [{"role": "user", "content": "hi"}]
DOWN = Reply.error(503, "down for maintenance")


def trace_of(p, **kwargs):
    raw = p.openai().chat.completions.with_raw_response.create(
        model="main", messages=HELLO, **kwargs
    )
    return raw.headers["x-429chain-trace"]


def two_entries(fake, proxy, breaker, admin_keys=()):
    a, b = fake("a"), fake("b")
    config = chain_config(
        [provider_entry("a", a), provider_entry("b", b)],
        [("a", "model-a"), ("b", "model-b")],
        settings={"breaker": breaker, "adminKeys": list(admin_keys)},
    )
    return a, b, proxy(config)


def entry_report(p, label="a/model-a"):
    with p.http() as http:
        report = http.get("/v1/ratelimits").json()
    return next(e for e in report["entries"] if f"{e['provider']}/{e['model']}" == label)


def test_an_outage_is_skipped_after_three_failures_then_probed_and_closed(fake, proxy):
    a, b, p = two_entries(fake, proxy, {"failures": 3, "baseMs": 1000, "maxMs": 4000})
    a.always(DOWN)
    for _ in range(3):
        assert trace_of(p) == "a/model-a=503,b/model-b=200"
    # Open: later requests do not call a at all.
    for _ in range(5):
        assert trace_of(p) == "a/model-a=skip:breaker,b/model-b=200"
    assert len(a.requests) == 3
    report = entry_report(p)
    assert report["state"] == "broken"
    assert report["breaker"]["state"] == "open"
    assert report["breaker"]["failures"] == 3
    assert report["reason"] == "3 transient failures in a row (last: 503)"
    assert report["until"] is not None
    # The outage ends; within one interval the first request goes to a again (its probe).
    a.always(Reply())
    deadline = time.monotonic() + 1.5
    while trace_of(p) != "a/model-a=200":
        assert time.monotonic() < deadline, "a was not probed within one interval"
        time.sleep(0.05)
    assert len(a.requests) == 4
    assert trace_of(p) == "a/model-a=200"  # closed: traffic as usual
    report = entry_report(p)
    assert (report["state"], report["breaker"]["state"]) == ("available", "closed")
    assert report["breaker"]["failures"] == 0


def test_a_failed_probe_opens_it_again_for_twice_as_long(fake, proxy):
    a, b, p = two_entries(fake, proxy, {"failures": 2, "baseMs": 400, "maxMs": 5000})
    a.always(DOWN)
    trace_of(p), trace_of(p)  # two failures: open for 0.4 s
    time.sleep(0.5)
    assert trace_of(p) == "a/model-a=503,b/model-b=200"  # the probe fails: 0.8 s now
    opened = time.monotonic()
    calls = len(a.requests)
    while time.monotonic() - opened < 0.6:
        assert trace_of(p) == "a/model-a=skip:breaker,b/model-b=200"
        time.sleep(0.05)
    assert len(a.requests) == calls  # nothing reached a while it was open
    time.sleep(0.4)
    assert trace_of(p) == "a/model-a=503,b/model-b=200"  # the next probe


def test_while_the_probe_is_in_flight_the_others_keep_skipping(fake, proxy):
    a, b, p = two_entries(fake, proxy, {"failures": 1, "baseMs": 300, "maxMs": 300})
    a.script(DOWN)
    assert trace_of(p) == "a/model-a=503,b/model-b=200"
    time.sleep(0.4)
    a.script(Reply(delay=1.0))  # the probe answers, slowly
    traces: list[str] = []
    probe = threading.Thread(target=lambda: traces.append(trace_of(p)))
    probe.start()
    time.sleep(0.3)
    during = [trace_of(p) for _ in range(3)]
    probe.join(5)
    assert traces == ["a/model-a=200"]
    assert during == ["a/model-a=skip:breaker,b/model-b=200"] * 3
    assert entry_report(p)["breaker"]["state"] == "closed"
    assert len(a.requests) == 2


def test_a_429_or_a_client_error_is_no_failure_of_the_entry(fake, proxy):
    a, b, p = two_entries(fake, proxy, {"failures": 2, "baseMs": 60000})
    a.script(DOWN, Reply.rate_limited(retry_after="1"))
    trace_of(p), trace_of(p)  # 503, then a 429: the streak is over
    time.sleep(1.2)
    a.script(DOWN)
    assert trace_of(p) == "a/model-a=503,b/model-b=200"  # one failure, not two
    assert trace_of(p) == "a/model-a=200"


def test_failures_zero_turns_the_breaker_off(fake, proxy):
    a, b, p = two_entries(fake, proxy, {"failures": 0})
    a.always(DOWN)
    for _ in range(6):
        assert trace_of(p) == "a/model-a=503,b/model-b=200"
    assert len(a.requests) == 6


def test_open_breakers_are_in_the_metrics(fake, proxy):
    a, b, p = two_entries(fake, proxy, {"failures": 1, "baseMs": 60000})
    a.always(DOWN)
    trace_of(p)
    trace_of(p)
    with p.http() as http:
        text = http.get("/metrics").text
    assert "chain429_open_breakers 1.0" in text
    assert 'chain429_skips_total{model="model-a",provider="a",reason="breaker"} 1.0' in text


def test_breaker_state_survives_a_restart_of_the_store():
    """Exported and imported as the StatePersister does: an open breaker stays open, and one
    whose interval ended while the server was down is probed by the next request."""
    config = Config.model_validate(
        chain_config(
            [{"id": "a", "type": "generic-openai", "baseUrl": "http://127.0.0.1:9/v1"}],
            [("a", "model-a")],
        )
    )
    entry = build_snapshot(config).chains["main"].entries[0]
    policy = CooldownPolicy(breaker_failures=2, breaker_base_s=10.0, breaker_max_s=60.0)
    down = Outcome(Kind.TRANSIENT, "503", 503)
    now = 1_000_000.0

    async def scenario() -> None:
        store = MemoryStateStore()
        for _ in range(2):
            reservation = await store.reserve(entry, 0, now)
            await store.record(reservation, down, {}, b"", now, policy)  # type: ignore[arg-type]
        saved = store.export_state(now)
        assert saved["breaker:a/model-a"] == {"failures": 2, "open": True}

        restarted = MemoryStateStore()
        restarted.import_state(saved, now + 1)
        block = await restarted.reserve(entry, 0, now + 1)
        assert getattr(block, "reason", None) == "breaker"
        assert (await restarted.breaker(entry, now + 1))["state"] == "open"
        # Its interval is over: one probe, the others skip; a success closes it.
        probe = await restarted.reserve(entry, 0, now + 11)
        assert getattr(probe, "id", None) is not None
        other = await restarted.reserve(entry, 0, now + 11)
        assert getattr(other, "reason", None) == "breaker"
        assert (await restarted.breaker(entry, now + 11))["state"] == "half_open"
        await restarted.record(probe, Outcome(Kind.SUCCESS, "200", 200), {}, b"", now + 12, policy)  # type: ignore[arg-type]
        assert await restarted.breaker(entry, now + 12) == {
            "state": "closed",
            "failures": 0,
            "until": None,
            "reason": None,
        }

        # Down long enough that the interval ended: restored half-open.
        late = MemoryStateStore()
        late.import_state(saved, now + 30)
        assert (await late.breaker(entry, now + 30))["state"] == "half_open"
        assert getattr(await late.reserve(entry, 0, now + 30), "id", None) is not None
        assert getattr(await late.reserve(entry, 0, now + 30), "reason", None) == "breaker"

    import asyncio

    asyncio.run(scenario())


def test_clearing_the_limits_of_an_entry_closes_its_breaker(fake, proxy):
    a, b, p = two_entries(fake, proxy, {"failures": 1, "baseMs": 60000}, ["admin-key-for-tests"])
    a.script(DOWN)
    trace_of(p)
    assert trace_of(p) == "a/model-a=skip:breaker,b/model-b=200"
    with p.http() as http:
        http.headers["authorization"] = "Bearer admin-key-for-tests"
        cleared = http.post("/v1/admin/limits/clear", json={"provider": "a", "model": "model-a"})
    assert cleared.status_code == 200, cleared.text
    assert trace_of(p) == "a/model-a=200"
    assert entry_report(p)["breaker"]["state"] == "closed"
