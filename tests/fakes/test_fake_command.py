"""Streaming against every fake we ship, and `chain429 fake` for users (docs/fake.md).

Each test runs the fake the way a user does, as its own process, and talks to
it over HTTP; the proxy tests point a real chain429 at it.
"""

from __future__ import annotations

import json
import subprocess
import time

import httpx
import openai
import pytest

from chain429.config.model import Config
from chain429.server.app import create_app
from chain429.server.serving import ServerThread
from fixtures.processes import CHAIN429, fake_process, free_port, run, stop, wait_healthy
from fixtures.servers import provider_entry

HELLO = [{"role": "user", "content": "hi"}]
STREAM = {"model": "m", "stream": True, "messages": HELLO}
PLAIN = {"model": "m", "messages": HELLO}


def streamed_text(response: httpx.Response) -> str:
    text = ""
    for line in response.iter_lines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                text += choice["delta"].get("content") or ""
    return text


@pytest.mark.parametrize("module", [True, False], ids=["python -m chain429.fakes", "fake"])
def test_the_fake_answers_a_streaming_request_with_a_stream(module):
    with fake_process(module=module) as url, httpx.Client(base_url=url) as http:
        with http.stream("POST", "/chat/completions", json=STREAM) as response:
            assert response.headers["content-type"] == "text/event-stream"
            assert streamed_text(response) == "Hello from fake"
        assert http.post("/chat/completions", json=PLAIN).json()["object"] == "chat.completion"


def test_streaming_through_chain429_demo_works():
    port = free_port()
    proc = subprocess.Popen(
        [*CHAIN429, "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="chain429-demo-key", max_retries=0)
        chunks = client.chat.completions.create(model="demo", messages=HELLO, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Hello from beta, streamed word by word through chain429."
        # Embeddings and legacy completions fail over the same way (alpha 429s everywhere).
        vectors = client.embeddings.with_raw_response.create(model="demo-embed", input="hi")
        assert vectors.headers["x-429chain-provider"] == "beta/steady-embed"
        assert len(vectors.parse().data[0].embedding) == 16
        chunks = client.completions.create(model="demo", prompt="hi", stream=True)
        text = "".join(c.choices[0].text for c in chunks)
        assert text == "Hello from beta, streamed word by word through chain429."
    finally:
        stop(proc)


def test_the_demo_shows_a_streamed_answer():
    result = run("demo", "--once", "--port", str(free_port()))
    assert result.returncode == 0, result.stderr
    assert "4. the same with stream=true: HTTP 200 from beta/steady-8b" in result.stdout
    assert "= 'Hello from beta, streamed word by word through chain429.' in 9 chunks" in (
        result.stdout
    )


def test_a_script_from_the_command_line_plays_in_order_then_answers(tmp_path):
    args = ["-r", "429,retry-after=30", "-r", "503,times=2", "-r", "ok,header=x-seen:yes"]
    with fake_process(*args) as url, httpx.Client(base_url=url) as http:
        first = http.post("/chat/completions", json=PLAIN)
        assert (first.status_code, first.headers["retry-after"]) == (429, "30")
        assert first.json()["error"]["code"] == "rate_limit_exceeded"
        statuses = [http.post("/chat/completions", json=PLAIN).status_code for _ in range(4)]
        assert statuses == [503, 503, 200, 200]


def test_a_script_answers_each_route_in_its_own_shape():
    with fake_process("-r", "ok,text=Howdy there,times=4") as url:
        sdk = openai.OpenAI(base_url=url, api_key="k", max_retries=0)
        assert sdk.completions.create(model="m", prompt="hi").choices[0].text == "Howdy there"
        streamed = sdk.completions.create(model="m", prompt="hi", stream=True)
        assert "".join(c.choices[0].text for c in streamed) == "Howdy there"
        assert len(sdk.embeddings.create(model="e", input="hi").data[0].embedding) == 16
        chat = sdk.chat.completions.create(model="m", messages=HELLO)
        assert chat.choices[0].message.content == "Howdy there"


def test_a_script_file_with_slow_first_token_cut_and_loop(tmp_path):
    script = tmp_path / "script.yaml"
    script.write_text(
        "replies:\n"
        "  - {firstToken: 0.6, text: slow but sure}\n"
        "  - {cutAfter: 2, text: one two three four}\n"
        "  - {status: 429, headers: {x-ratelimit-remaining-requests: '0'}}\n"
        "loop: true\n"
    )
    with fake_process("--script", str(script)) as url, httpx.Client(base_url=url) as http:
        started = time.monotonic()
        with http.stream("POST", "/chat/completions", json=STREAM) as slow:
            headers_at = time.monotonic() - started
            assert streamed_text(slow) == "slow but sure"
            assert headers_at < 0.4 < time.monotonic() - started  # headers at once, token later
        with (
            pytest.raises(httpx.RemoteProtocolError),
            http.stream("POST", "/chat/completions", json=STREAM) as cut,
        ):
            streamed_text(cut)  # two chunks (role, "one"), then the connection closes
        limited = http.post("/chat/completions", json=PLAIN)
        assert limited.headers["x-ratelimit-remaining-requests"] == "0"
        again = http.post("/chat/completions", json=PLAIN)  # loop: the script again
        assert again.json()["choices"][0]["message"]["content"] == "slow but sure"


@pytest.mark.parametrize(
    "args,message",
    [
        (["-r", "429,retry=3"], "unknown option 'retry'"),
        (["-r", "abc"], "'abc' is not a status"),
        (["-r", "200,cut=-1"], "cut must not be negative"),
        (["-r", "200,header=x"], "header=NAME:VALUE"),
    ],
)
def test_a_bad_reply_is_one_error_line(args, message):
    result = run("fake", "--port", "0", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_config_tried_against_the_fake_before_real_quota(fake):
    """What docs/fake.md walks through: a 429 cools the entry down, the next one answers."""
    spare = fake("spare")
    with fake_process("--name", "groq", "-r", "429,retry-after=30") as url:
        config = Config.model_validate(
            {
                "version": 1,
                "settings": {"defaultChain": "main"},
                "providers": [
                    {"id": "groq", "type": "generic-openai", "baseUrl": url},
                    provider_entry("spare", spare),
                ],
                "chains": [
                    {
                        "name": "main",
                        "entries": [
                            {"provider": "groq", "model": "llama"},
                            {"provider": "spare", "model": "s"},
                        ],
                    }
                ],
            }
        )
        with ServerThread(create_app(config)) as server:
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
            traces = []
            for _ in range(2):
                raw = client.chat.completions.with_raw_response.create(model="main", messages=HELLO)
                traces.append(raw.headers["x-429chain-trace"])
            assert traces == ["groq/llama=429,spare/s=200", "groq/llama=skip:cooldown,spare/s=200"]
            streamed = client.chat.completions.create(model="main", messages=HELLO, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
            assert text == "Hello from spare"


def test_a_port_in_use_is_the_same_one_line():
    with fake_process() as url:
        port = url.rsplit(":", 1)[1].split("/")[0]
        result = run("fake", "--port", port)
    assert result.returncode == 2
    assert result.stderr == f"error: port {port} is in use; pick another with --port\n"
