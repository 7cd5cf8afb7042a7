"""The fault modes of the shipped fake, as a client sees them, and the catalogue built on them.

`chain429 fake` plays them from the command line (one process, real HTTP);
the catalogue (chain429.fakes.faults) is what the fault matrix and
`chain429 selftest` play, so each of its faults must be one `chain429 fake`
can play too.
"""

from __future__ import annotations

import json
import re
import shlex
import time

import httpx
import openai
import pytest

from chain429.fakes.faults import ANSWER, FAULTS
from chain429.fakes.provider import FakeProvider
from chain429.fakes.script import ScriptError, load_script, parse_step
from fixtures.processes import fake_process

HELLO = [{"role": "user", "content": "hi"}]
STREAM = {"model": "m", "stream": True, "messages": HELLO}
PLAIN = {"model": "m", "messages": HELLO}


def sse_data(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


PREFILL = {
    "model": "m",
    "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "one two"},
    ],
}


def test_reset_closes_the_connection_before_any_byte():
    with fake_process("-r", "reset", "-r", "ok") as url, httpx.Client(base_url=url) as http:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            http.post("/chat/completions", json=PLAIN)
        assert http.post("/chat/completions", json=PLAIN).status_code == 200  # then fine


def test_hang_never_answers_until_the_client_leaves():
    with FakeProvider("dead") as fake:
        fake.script(parse_step("hang").reply_source("dead"))
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{fake.base_url}/chat/completions", json=PLAIN, timeout=0.5)
        assert 0.5 <= time.monotonic() - started < 2
        assert len(fake.requests) == 1
        deadline = time.monotonic() + 2
        while fake.disconnects < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fake.disconnects == 1  # it noticed the client leave, and stopped waiting


def test_malformed_chunk_and_a_stream_without_done():
    args = ["-r", "200,malformed=2,text=one two three", "-r", "ok,done=false,text=one two"]
    with fake_process(*args) as url, httpx.Client(base_url=url) as http:
        with http.stream("POST", "/chat/completions", json=STREAM) as junk:
            events = sse_data(junk)
        assert events[2] == "{not json"  # after the role chunk and "one"
        assert events[-1] == "[DONE]"
        with http.stream("POST", "/chat/completions", json=STREAM) as undone:
            events = sse_data(undone)
        assert "[DONE]" not in events
        assert json.loads(events[-1])["choices"][0]["finish_reason"] == "stop"
    with fake_process("-r", "200,malformed=1") as url:
        broken = httpx.post(f"{url}/chat/completions", json=PLAIN)
        assert broken.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            broken.json()


@pytest.mark.parametrize(
    ("preset", "code", "words"),
    [
        ("context-length", "context_length_exceeded", "maximum context length"),
        ("content-filter", "content_filter", "content management policy"),
        ("prefill", "invalid_request_message_order", "Assistant with prefix"),
    ],
)
def test_error_presets_are_the_400s_real_providers_send(preset, code, words):
    with fake_process("-r", f"400,error={preset}") as url:
        client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model="m", messages=HELLO)
    assert raised.value.code == code
    assert words in raised.value.message


def test_a_200_continues_its_own_answer_from_a_prefill_or_refuses_it():
    args = ["-r", "ok,text=one two three four", "-r", "ok,text=one two three,reject-prefill=true"]
    with fake_process(*args) as url, httpx.Client(base_url=url) as http:
        rest = http.post("/chat/completions", json=PREFILL).json()
        assert rest["choices"][0]["message"]["content"] == " three four"
        refused = http.post("/chat/completions", json=PREFILL)
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "invalid_request_message_order"


def test_flapping_is_a_looped_script():
    with fake_process("-r", "503", "-r", "ok", "--loop") as url, httpx.Client(base_url=url) as http:
        statuses = [http.post("/chat/completions", json=PLAIN).status_code for _ in range(5)]
    assert statuses == [503, 200, 503, 200, 503]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("200,error=context-length", "write 400,error="),
        ("400,error=teapot", "error must be one of context-length, content-filter, prefill"),
        ("ok,done=maybe", "done must be true or false"),
        ("crash", "'crash' is not a status (a number, ok, reset or hang)"),
    ],
)
def test_bad_fault_options_say_what_is_wrong(spec, message):
    with pytest.raises(ScriptError, match=re.escape(message)):
        parse_step(spec)


def test_the_same_options_in_a_script_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "replies:\n  - {status: reset}\n  - {status: 400, error: content-filter}\n"
        "  - {malformedAfter: 3, done: false, rejectPrefill: true}\n"
    )
    played = load_script(path)
    assert played.describe() == (
        "reset -> 400,error=content-filter -> ok,malformed=3,done=false,reject-prefill=true, "
        "then ok"
    )


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
def test_every_fault_of_the_catalogue_is_a_script_chain429_fake_plays(fault):
    words = shlex.split(fault.cli.replace(" --loop", ""))
    specs = words[1::2]
    assert words[::2] == ["-r"] * len(specs)
    assert load_script(replies=specs).steps == fault.steps
    if fault.steps[0].drop is None and fault.steps[0].status == 200:
        assert fault.steps[0].text == ANSWER
