"""midStream: continue when the next entry cannot take a prefill: a fresh answer, matched.

The client streams through the openai SDK; what it receives is checked whole,
and the path taken (continued:prefill, continued:restart, interrupted) is read
back from the request log and its stats, as a user would.
"""

from __future__ import annotations

import time

import openai
import pytest

from chain429.fakes.provider import Reply
from chain429.requestlog.database import migrate, open_database
from chain429.requestlog.writer import Telemetry
from chain429.routing.continuation import MISMATCH, NEED_MORE, overlap_end
from fixtures.servers import chain_config, provider_entry

HELLO = [{"role": "user", "content": "hi"}]
ANSWER = ["The answer", " is", " forty", "-two."]
# Role chunk, then "The answer", " is": the client has "The answer is" when it dies.
CUT = Reply.stream("", pieces=ANSWER, cut_after=3)


def stream(client):
    with client.chat.completions.with_streaming_response.create(
        model="main", messages=HELLO, stream=True
    ) as raw:
        pieces = [c.choices[0].delta for c in raw.parse() if c.choices]
        return "".join(d.content or "" for d in pieces), pieces, raw.headers


def run(fake, proxy, tmp_path, second, second_extra=None):
    a, b = fake("a", default=CUT), fake("b", default=second)
    database = open_database(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(database)
    config = chain_config(
        [provider_entry("a", a), provider_entry("b", b, **(second_extra or {}))],
        [("a", "model-a"), ("b", "model-b")],
        settings={"midStream": "continue"},
    )
    p = proxy(config, telemetry=Telemetry(database, batch_interval_s=0.01))
    return a, b, p


def logged(p, request_id):
    deadline = time.monotonic() + 5
    with p.http() as http:
        while (answer := http.get(f"/v1/stats/requests/{request_id}")).status_code == 404:
            assert time.monotonic() < deadline, "the request was not logged"
            time.sleep(0.05)
    row = answer.json()
    return row, [f"{t['provider']}/{t['outcome']}" for t in row["trail"]]


def test_a_fresh_answer_that_repeats_the_start_finishes_the_stream(fake, proxy, tmp_path):
    a, b, p = run(fake, proxy, tmp_path, Reply.stream("", pieces=ANSWER))
    text, deltas, headers = stream(p.openai())
    assert text == "The answer is forty-two."
    assert sum(1 for d in deltas if d.role) == 1  # one answer, not two
    assert b.requests[0].json()["messages"] == HELLO  # the original request, no prefill
    row, trail = logged(p, headers["x-request-id"])
    assert trail == ["a/200", "b/continued:restart"]
    assert (row["outcome"], row["attempts"]) == ("success", 2)
    with p.http() as http:
        providers = {r["provider"]: r for r in http.get("/v1/stats/providers").json()["data"]}
    assert providers["b"]["attempts"]["outcomes"] == {"continued:restart": 1}


def test_whitespace_differences_do_not_count(fake, proxy, tmp_path):
    fresh = Reply.stream("", pieces=["The  answer\n", "is forty", "-two."])
    a, b, p = run(fake, proxy, tmp_path, fresh)
    text, _, _ = stream(p.openai())
    assert text == "The answer is forty-two."


def test_a_fresh_answer_that_says_something_else_ends_with_the_error_event(fake, proxy, tmp_path):
    a, b, p = run(fake, proxy, tmp_path, Reply.stream("", pieces=["Forty-two", " it is."]))
    client = p.openai()
    with client.chat.completions.with_streaming_response.create(
        model="main", messages=HELLO, stream=True
    ) as raw:
        received = []
        with pytest.raises(openai.APIError) as caught:
            for chunk in raw.parse():
                received.extend(c.delta.content or "" for c in chunk.choices)
        request_id = raw.headers["x-request-id"]
    assert "".join(received) == "The answer is"  # nothing of the other answer leaked
    assert caught.value.code == "stream_interrupted"
    assert str(caught.value) == "a/model-a cut the stream (connection_reset)."
    row, trail = logged(p, request_id)
    assert trail == ["a/200", "b/restart_mismatch", "a/interrupted"]
    assert (row["outcome"], row["attempts"]) == ("stream_interrupted", 2)
    with p.http() as http:
        metrics = http.get("/metrics").text
    assert 'chain429_streams_interrupted_total{model="model-a",provider="a"} 1.0' in metrics


def refuses_prefill(request):
    """A provider that says it takes prefills but rejects an assistant prefix with a 400."""
    if request.json()["messages"][-1]["role"] == "assistant":
        return Reply.error(400, "Assistant message prefill is not supported for this model")
    return Reply.stream("", pieces=ANSWER)


def test_a_refused_prefill_falls_back_to_a_fresh_answer(fake, proxy, tmp_path):
    a, b, p = run(fake, proxy, tmp_path, refuses_prefill, {"supportsPrefill": True})
    text, _, headers = stream(p.openai())
    assert text == "The answer is forty-two."
    assert [r.json()["messages"][-1]["role"] for r in b.requests] == ["assistant", "user"]
    _, trail = logged(p, headers["x-request-id"])
    assert trail == ["a/200", "b/400", "b/continued:restart"]


def test_a_refused_prefill_is_never_the_clients_error(fake, proxy, tmp_path):
    def refuses_everything_useful(request):
        if request.json()["messages"][-1]["role"] == "assistant":
            return Reply.error(400, "Assistant message prefill is not supported")
        return Reply.stream("Something else.")

    a, b, p = run(fake, proxy, tmp_path, refuses_everything_useful, {"supportsPrefill": True})
    with pytest.raises(openai.APIError) as caught:
        stream(p.openai())
    assert caught.value.code == "stream_interrupted"  # not the 400 about the prefill
    assert "prefill" not in str(caught.value)
    assert len(b.requests) == 2  # the prefill, then the fresh answer


def test_a_prefill_entry_continues_and_the_path_is_recorded(fake, proxy, tmp_path):
    a, b, p = run(
        fake,
        proxy,
        tmp_path,
        Reply.stream("", pieces=[" forty", "-two."]),
        {"supportsPrefill": True},
    )
    text, _, headers = stream(p.openai())
    assert text == "The answer is forty-two."
    _, trail = logged(p, headers["x-request-id"])
    assert trail == ["a/200", "b/continued:prefill"]


def test_without_continue_the_trail_says_interrupted(fake, proxy, tmp_path):
    a, b = fake("a", default=CUT), fake("b")
    database = open_database(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(database)
    config = chain_config(
        [provider_entry("a", a), provider_entry("b", b)], [("a", "model-a"), ("b", "model-b")]
    )
    p = proxy(config, telemetry=Telemetry(database, batch_interval_s=0.01))
    client = p.openai()
    with client.chat.completions.with_streaming_response.create(
        model="main", messages=HELLO, stream=True
    ) as raw:
        with pytest.raises(openai.APIError):
            list(raw.parse())
        request_id = raw.headers["x-request-id"]
    row, trail = logged(p, request_id)
    assert trail == ["a/200", "a/interrupted"]
    assert row["attempts"] == 1
    assert len(b.requests) == 0


@pytest.mark.parametrize(
    ("received", "fresh", "end"),
    [
        ("The answer is", "The answer is forty-two.", len("The answer is")),
        ("The answer is ", "The answer is forty-two.", len("The answer is ")),
        ("The answer is", "The  answer\nis forty-two.", len("The  answer\nis")),
        ("  The answer", "The answer is", len("The answer")),
        ("The answer is", "The answer", NEED_MORE),
        ("The answer is", "The answer ", NEED_MORE),
        ("The answer is", "The answers", MISMATCH),
        ("The answer", "Theanswer", MISMATCH),
        ("The answer is", "Forty-two", MISMATCH),
        ("", "Anything", 0),
    ],
)
def test_overlap_end_normalizes_whitespace(received, fresh, end):
    assert overlap_end(received, fresh) == end
