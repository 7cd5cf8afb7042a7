"""What operators see: request ids, /metrics, and log lines that name the request."""

from __future__ import annotations

import json
import logging

import httpx
from prometheus_client.parser import text_string_to_metric_families

from chain429.fakes.provider import Reply
from chain429.server.logs import JsonFormatter
from fixtures.servers import PROXY_KEY, chain_config, provider_entry

HELLO = [{"role": "user", "content": "hi"}]


def start(fake, proxy, first=None, settings=None):
    a = fake("a", default=first or Reply.rate_limited(retry_after="30"))
    b = fake("b")
    config = chain_config(
        [provider_entry("a", a), provider_entry("b", b)],
        [("a", "model-a"), ("b", "model-b")],
        settings=settings,
    )
    return proxy(config)


def chat(p, **body):
    with p.http() as http:
        return http.post("/v1/chat/completions", json={"model": "main", "messages": HELLO, **body})


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_every_answer_carries_a_distinct_request_id(fake, proxy):
    p = start(fake, proxy)
    first, second = chat(p), chat(p)
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2 and all(i.startswith("req_") for i in ids)
    unauthorized = httpx.post(f"{p.url}/v1/chat/completions", json={"messages": HELLO})
    assert unauthorized.status_code == 401
    assert unauthorized.headers["x-request-id"].startswith("req_")
    with (
        p.http() as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "main", "messages": HELLO, "stream": True},
        ) as streamed,
    ):
        assert streamed.headers["x-request-id"].startswith("req_")


def test_metrics_need_the_admin_key_unless_public(fake, proxy):
    p = start(fake, proxy)
    assert httpx.get(f"{p.url}/metrics").status_code == 401
    public = start(fake, proxy, settings={"metricsPublic": True})
    assert httpx.get(f"{public.url}/metrics").status_code == 200


def test_metrics_count_requests_attempts_skips_tokens_and_cooldowns(fake, proxy):
    p = start(fake, proxy)
    chat(p)  # a: 429, b: 200
    chat(p)  # a: skip:cooldown, b: 200
    with p.http() as http:
        response = http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert (
        found[
            (
                "chain429_requests_total",
                (
                    ("chain", "main"),
                    ("client", ""),
                    ("endpoint", "chat"),
                    ("outcome", "success"),
                    ("provider", "b"),
                ),
            )
        ]
        == 2
    )
    assert (
        found[
            (
                "chain429_attempts_total",
                (("model", "model-a"), ("outcome", "429"), ("provider", "a")),
            )
        ]
        == 1
    )
    assert (
        found[
            (
                "chain429_attempts_total",
                (("model", "model-b"), ("outcome", "200"), ("provider", "b")),
            )
        ]
        == 2
    )
    assert (
        found[
            (
                "chain429_skips_total",
                (("model", "model-a"), ("provider", "a"), ("reason", "cooldown")),
            )
        ]
        == 1
    )
    assert found[("chain429_request_latency_seconds_count", (("chain", "main"),))] == 2
    assert (
        found[("chain429_tokens_total", (("chain", "main"), ("kind", "prompt"), ("provider", "b")))]
        > 0
    )
    assert found[("chain429_active_cooldowns", ())] == 1
    # No request log here: no log series either (with one: tests/requestlog/test_outage.py).
    assert not [name for name, _ in found if name.startswith("chain429_log_")]


def test_metrics_record_time_to_first_token_for_streams(fake, proxy):
    p = start(fake, proxy, first=Reply.stream("streamed"))
    with p.http() as http:
        http.post(
            "/v1/chat/completions", json={"model": "main", "messages": HELLO, "stream": True}
        ).read()
        found = samples(http.get("/metrics").text)
    assert found[("chain429_time_to_first_token_seconds_count", (("chain", "main"),))] == 1


def test_log_lines_about_a_request_carry_its_id_and_no_secrets(fake, proxy, caplog):
    caplog.set_level(logging.DEBUG)
    p = start(fake, proxy)
    request_id = chat(p).headers["x-request-id"]
    about_it = [
        r
        for r in caplog.records
        if getattr(r, "request_id", None) == request_id or request_id in r.getMessage()
    ]
    failover = [r for r in caplog.records if "trying the next entry" in r.getMessage()]
    assert failover, "the 429 fall-through is logged"
    assert all(record.request_id == request_id for record in failover)
    assert about_it
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert PROXY_KEY not in everything
    assert "secret-a" not in everything and "secret-b" not in everything


def test_json_log_format_is_one_object_per_line():
    record = logging.LogRecord(
        "chain429.routing.router", logging.INFO, __file__, 1, "a/m answered %s", ("429",), None
    )
    record.request_id = "req_0123"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "a/m answered 429"
    assert data["level"] == "info"
    assert data["request_id"] == "req_0123"
    assert data["logger"] == "chain429.routing.router"
