"""Same-entry retries and short waits (settings.retry), seen by an openai SDK client.

Each test runs chain429 on 127.0.0.1 in front of fake providers and checks what
the client gets, which entries were called how often (the fakes count), the
trace header and, where it matters, how long it took.
"""

from __future__ import annotations

import socket
import time

import openai
import pytest

from chain429.fakes.provider import Reply
from fixtures.servers import chain_config, provider_entry
from fixtures.tcp_proxy import TcpProxy

HELLO = [{"role": "user", "content": "hi"}]
PREFERRED = {"retry": {"attempts": 1, "shortWaitMs": 3000}}


def create(client, **kwargs):
    kwargs.setdefault("model", "main")
    kwargs.setdefault("messages", HELLO)
    return client.chat.completions.with_raw_response.create(**kwargs)


def stream(client, **kwargs):
    """(text, headers) of a streamed answer."""
    kwargs.setdefault("model", "main")
    kwargs.setdefault("messages", HELLO)
    with client.chat.completions.with_streaming_response.create(stream=True, **kwargs) as raw:
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        return text, raw.headers


def ask(client, streaming):
    """(text, headers) either way, so each test runs for both kinds of client."""
    if streaming:
        return stream(client)
    raw = create(client)
    return raw.parse().choices[0].message.content, raw.headers


def two_entries(fake, proxy, settings=None, a_extra=None, entry_extra=None):
    a, b = fake("a"), fake("b")
    config = chain_config(
        [provider_entry("a", a, **(a_extra or {})), provider_entry("b", b)],
        [("a", "model-a"), ("b", "model-b")],
        settings=settings,
    )
    if entry_extra:
        config["chains"][0]["entries"][0].update(entry_extra)
    return a, b, proxy(config)


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "stream"])
def test_a_single_500_is_retried_on_the_same_entry(fake, proxy, streaming):
    a, b, p = two_entries(fake, proxy, PREFERRED)
    a.script(Reply.error(500, "blip"))
    started = time.monotonic()
    text, headers = ask(p.openai(), streaming)
    elapsed = time.monotonic() - started
    assert text == "Hello from a"
    assert headers["x-429chain-trace"] == "a/model-a=500,a/model-a=200"
    assert headers["x-429chain-attempts"] == "2"
    assert (len(a.requests), len(b.requests)) == (1 + 1, 0)
    assert 0.1 <= elapsed < 2.0  # one jittered 100-400 ms backoff, no more


def test_by_default_a_500_falls_through_at_once(fake, proxy):
    a, b, p = two_entries(fake, proxy)
    a.script(Reply.error(500, "blip"))
    text, headers = ask(p.openai(), False)
    assert text == "Hello from b"
    assert headers["x-429chain-trace"] == "a/model-a=500,b/model-b=200"
    assert (len(a.requests), len(b.requests)) == (1, 1)


def test_a_persistent_503_is_retried_once_then_falls_through(fake, proxy):
    a, b, p = two_entries(fake, proxy, PREFERRED)
    a.always(Reply.error(503, "down"))
    text, headers = ask(p.openai(), False)
    assert text == "Hello from b"
    assert headers["x-429chain-trace"] == "a/model-a=503,a/model-a=503,b/model-b=200"
    assert (len(a.requests), len(b.requests)) == (2, 1)


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "stream"])
def test_a_reset_before_the_headers_is_retried(fake, proxy, streaming):
    a, b = fake("a"), fake("b")
    with TcpProxy(("127.0.0.1", a.port)) as tcp:
        tcp.cut_after(b"/chat/completions")  # the first request dies before any answer
        settings = {**PREFERRED, "connectTimeoutMs": 2000}
        a_entry = {**provider_entry("a", a), "baseUrl": f"http://127.0.0.1:{tcp.port}/v1"}
        config = chain_config(
            [a_entry, provider_entry("b", b)],
            [("a", "model-a"), ("b", "model-b")],
            settings=settings,
        )
        p = proxy(config)
        text, headers = ask(p.openai(), streaming)
    assert text == "Hello from a"
    first, second = headers["x-429chain-trace"].split(",")
    assert first in ("a/model-a=connection_reset", "a/model-a=upstream_error")
    assert second == "a/model-a=200"
    assert len(b.requests) == 0


def test_a_refused_connection_is_retried_then_falls_through(fake, proxy):
    with socket.socket() as placeholder:  # a port nobody listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    b = fake("b")
    config = chain_config(
        [
            {"id": "a", "type": "generic-openai", "baseUrl": f"http://127.0.0.1:{port}/v1"},
            provider_entry("b", b),
        ],
        [("a", "model-a"), ("b", "model-b")],
        settings=PREFERRED,
    )
    p = proxy(config)
    text, headers = ask(p.openai(), False)
    assert text == "Hello from b"
    assert headers["x-429chain-trace"] == (
        "a/model-a=connect_error,a/model-a=connect_error,b/model-b=200"
    )


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "stream"])
def test_a_429_with_a_short_retry_after_is_waited_for(fake, proxy, streaming):
    a, b, p = two_entries(fake, proxy, PREFERRED)
    a.script(Reply.rate_limited(retry_after="2"))
    started = time.monotonic()
    text, headers = ask(p.openai(), streaming)
    elapsed = time.monotonic() - started
    assert text == "Hello from a"  # the preferred model, not the fallback
    assert headers["x-429chain-trace"] == "a/model-a=429,a/model-a=200"
    assert (len(a.requests), len(b.requests)) == (2, 0)
    assert 2.0 <= elapsed < 3.5


def test_a_429_with_a_long_retry_after_falls_through_at_once(fake, proxy):
    a, b, p = two_entries(fake, proxy, PREFERRED)
    a.script(Reply.rate_limited(retry_after="30"))
    started = time.monotonic()
    text, headers = ask(p.openai(), False)
    assert text == "Hello from b"
    assert headers["x-429chain-trace"] == "a/model-a=429,b/model-b=200"
    assert time.monotonic() - started < 1.5
    # The next request finds the cooldown; 30 s is past shortWaitMs: no wait either.
    text, headers = ask(p.openai(), False)
    assert headers["x-429chain-trace"] == "a/model-a=skip:cooldown,b/model-b=200"
    assert len(a.requests) == 1


def test_a_request_arriving_during_a_short_cooldown_waits_for_it(fake, proxy):
    """Two chains share the entry a/model-a; only `main`'s entry waits for short 429s."""
    a, b = fake("a"), fake("b")
    config = chain_config(
        [provider_entry("a", a), provider_entry("b", b)],
        [("a", "model-a"), ("b", "model-b")],
        settings={"retry": {"shortWaitMs": 3000}},
    )
    impatient = {
        "name": "impatient",
        "entries": [
            {"provider": "a", "model": "model-a", "retry": {"shortWaitMs": 0}},
            {"provider": "b", "model": "model-b"},
        ],
    }
    config["chains"].append(impatient)
    p = proxy(config)
    a.script(Reply.rate_limited(retry_after="2"))
    raw = create(p.openai(), model="impatient")
    assert raw.headers["x-429chain-trace"] == "a/model-a=429,b/model-b=200"
    started = time.monotonic()
    raw = create(p.openai())  # a cools down for ~2 s more: within main's shortWaitMs
    assert raw.headers["x-429chain-trace"] == "a/model-a=skip:cooldown,a/model-a=200"
    assert raw.parse().choices[0].message.content == "Hello from a"
    assert 1.0 < time.monotonic() - started < 3.5
    assert (len(a.requests), len(b.requests)) == (2, 1)


def test_without_short_wait_a_429_falls_through(fake, proxy):
    a, b, p = two_entries(fake, proxy, {"retry": {"attempts": 1}})
    a.script(Reply.rate_limited(retry_after="2"))
    text, headers = ask(p.openai(), False)
    assert text == "Hello from b"
    assert headers["x-429chain-trace"] == "a/model-a=429,b/model-b=200"


@pytest.mark.parametrize(
    ("reply", "token"),
    [
        (Reply.error(401, "bad key"), "401"),
        (Reply.error(404, "no such model"), "404"),
        (Reply.error(400, "This model's maximum context length is 8192 tokens"), "400"),
    ],
    ids=["401", "404", "context-length"],
)
def test_4xx_and_context_length_are_never_retried(fake, proxy, reply, token):
    a, b, p = two_entries(fake, proxy, PREFERRED)
    a.script(reply)
    text, headers = ask(p.openai(), False)
    assert text == "Hello from b"
    assert headers["x-429chain-trace"] == f"a/model-a={token},b/model-b=200"
    assert len(a.requests) == 1


def test_a_client_error_reaches_the_client_after_one_call(fake, proxy):
    a, b, p = two_entries(fake, proxy, PREFERRED)
    a.script(Reply.error(400, "messages: bad role"))
    with pytest.raises(openai.BadRequestError):
        create(p.openai())
    assert (len(a.requests), len(b.requests)) == (1, 0)


def test_a_timeout_is_not_retried(fake, proxy):
    a, b, p = two_entries(fake, proxy, {**PREFERRED, "requestTimeoutMs": 300})
    a.script(Reply(delay=2.0))
    text, headers = ask(p.openai(), False)
    assert text == "Hello from b"
    assert headers["x-429chain-trace"] == "a/model-a=timeout,b/model-b=200"
    assert len(a.requests) == 1


def test_retry_can_be_set_per_provider_and_per_entry(fake, proxy):
    # settings: no retries; provider a: one retry; the entry of a: none after all.
    a, b, p = two_entries(
        fake, proxy, a_extra={"retry": {"attempts": 1}}, entry_extra={"retry": {"attempts": 0}}
    )
    a.script(Reply.error(500, "blip"))
    assert ask(p.openai(), False)[1]["x-429chain-trace"] == "a/model-a=500,b/model-b=200"
    a2, b2, p2 = two_entries(fake, proxy, a_extra={"retry": {"attempts": 1}})
    a2.script(Reply.error(500, "blip"))
    assert ask(p2.openai(), False)[1]["x-429chain-trace"] == "a/model-a=500,a/model-a=200"


def test_the_call_budget_stops_retries_and_skips_the_rest(fake, proxy):
    a, b, p = two_entries(fake, proxy, {**PREFERRED, "maxAttemptsPerRequest": 1})
    a.always(Reply.error(503, "down"))
    with pytest.raises(openai.InternalServerError) as caught:
        create(p.openai())
    headers = caught.value.response.headers
    assert headers["x-429chain-trace"] == "a/model-a=503,b/model-b=skip:budget"
    assert (len(a.requests), len(b.requests)) == (1, 0)


def test_waits_stay_within_the_clients_max_wait(fake, proxy):
    a, b, p = two_entries(fake, proxy, PREFERRED)
    a.script(Reply.rate_limited(retry_after="2"))
    started = time.monotonic()
    raw = create(p.openai(), extra_headers={"X-429chain-Max-Wait": "1"})
    assert raw.headers["x-429chain-trace"] == "a/model-a=429,b/model-b=200"
    assert time.monotonic() - started < 1.0


def test_each_retry_is_its_own_attempt_row_in_the_request_log(fake, proxy, tmp_path):
    from chain429.requestlog.database import migrate, open_database
    from chain429.requestlog.writer import Telemetry

    database = open_database(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(database)
    a, b = fake("a"), fake("b")
    config = chain_config(
        [provider_entry("a", a), provider_entry("b", b)],
        [("a", "model-a"), ("b", "model-b")],
        settings=PREFERRED,
    )
    p = proxy(config, telemetry=Telemetry(database, batch_interval_s=0.01))
    a.script(Reply.error(502, "bad gateway"))
    request_id = create(p.openai()).headers["x-request-id"]
    deadline = time.monotonic() + 5
    with p.http() as http:
        while (answer := http.get(f"/v1/stats/requests/{request_id}")).status_code == 404:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    row = answer.json()
    assert row["attempts"] == 2
    assert [(t["provider"], t["outcome"]) for t in row["trail"]] == [("a", "502"), ("a", "200")]


def timed(replies):
    """A reply source that plays `replies` in order and notes when each call came."""
    times: list[float] = []
    queue = list(replies)

    def answer(request):
        times.append(time.monotonic())
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return answer, times


@pytest.mark.parametrize(
    "replies",
    [
        [Reply.error(503, "down")],  # two retries on a persistent 503
        [Reply.rate_limited(retry_after="1"), Reply.error(500, "blip"), Reply()],  # wait, retry
    ],
    ids=["retries", "wait-then-retry"],
)
def test_an_entry_never_gets_a_third_call_within_1_5_s(fake, proxy, replies):
    a, b, p = two_entries(fake, proxy, {"retry": {"attempts": 2, "shortWaitMs": 3000}})
    answer, times = timed(replies)
    a.always(answer)
    ask(p.openai(timeout=20), False)
    assert len(times) == 3
    assert times[2] - times[0] >= 1.5  # the third call keeps its distance
