"""`chain429 demo`: the waterfall in action with fake providers and no keys.

Three fake providers run on loopback: `alpha` always answers 429, `beta`
answers, `gamma` stands by as the paid fallback (both stream when asked to).
The demo sends a few requests through the real proxy and narrates what
happened, then keeps serving so the user can point an OpenAI SDK, the CLI or
the web UI at it. Its config is a real file in a scratch directory, gone with
the demo, so edits through the UI or the admin API work as they would on a
real server.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from chain429.config.loader import load_config
from chain429.fakes.provider import FakeProvider, ReceivedRequest, Reply
from chain429.fakes.replies import route_of, wants_stream
from chain429.requestlog.database import migrate, open_database
from chain429.requestlog.writer import Telemetry
from chain429.server.app import create_app
from chain429.server.serving import serve

DEMO_KEY = "chain429-demo-key"
DEMO_ADMIN_KEY = "chain429-demo-admin-key"
# What the demo file's providers reference for their key; set in the demo's own
# environment, so a provider added through the UI can name it too.
DEMO_KEY_VAR = "DEMO_PROVIDER_API_KEY"
CHAIN = "demo"
EMBED_CHAIN = "demo-embed"  # the same waterfall for client.embeddings.create
RETRY_AFTER_S = 30


def answers_as_asked(
    name: str, chunk_delay: float = 0.04, requests_per_minute: int | None = None
) -> Callable[[ReceivedRequest], Reply]:
    """A fake's answer to each request: a stream (word by word) when it asks for one.

    With `requests_per_minute`, each answer says what is left of that quota in
    OpenAI's rate-limit headers, as real providers do, so the quota shows up in
    `/v1/ratelimits` (and counts down there)."""
    asked = itertools.count(1)

    def answer(request: ReceivedRequest) -> Reply:
        headers = {}
        if requests_per_minute is not None:
            left = max(0, requests_per_minute - next(asked))
            headers = {
                "x-ratelimit-limit-requests": str(requests_per_minute),
                "x-ratelimit-remaining-requests": str(left),
                "x-ratelimit-reset-requests": "1m0s",
            }
        if not wants_stream(request.body):
            return Reply(headers=headers)
        text = f"Hello from {name}, streamed word by word through chain429."
        legacy = route_of(request.path) == "completions"
        return Reply.stream(text, chunk_delay=chunk_delay, headers=headers, legacy=legacy)

    return answer


def demo_settings(port: int, alpha: str, beta: str, gamma: str) -> dict[str, Any]:
    """The demo's config, camelCase as in YAML."""
    return {
        "version": 1,
        "settings": {
            "port": port,
            "apiKeys": [DEMO_KEY],
            "adminKeys": [DEMO_ADMIN_KEY],
            "defaultChain": CHAIN,
        },
        "providers": [
            {
                "id": "alpha",
                "name": "Alpha (free, rate-limited)",
                "type": "generic-openai",
                "baseUrl": alpha,
                "apiKey": f"${{{DEMO_KEY_VAR}}}",
            },
            {
                "id": "beta",
                "name": "Beta (free)",
                "type": "generic-openai",
                "baseUrl": beta,
                "apiKey": f"${{{DEMO_KEY_VAR}}}",
            },
            {
                "id": "gamma",
                "name": "Gamma (paid)",
                "type": "generic-openai",
                "baseUrl": gamma,
                "apiKey": f"${{{DEMO_KEY_VAR}}}",
                "paid": True,
            },
        ],
        "chains": [
            {
                "name": CHAIN,
                "entries": [
                    {"provider": "alpha", "model": "fast-8b"},
                    {"provider": "beta", "model": "steady-8b"},
                    {"provider": "gamma", "model": "big-70b"},
                ],
            },
            {
                "name": EMBED_CHAIN,
                "kind": "embeddings",
                "entries": [
                    {"provider": "alpha", "model": "fast-embed"},
                    {"provider": "beta", "model": "steady-embed"},
                ],
            },
        ],
    }


def write_demo_config(folder: Path, port: int, alpha: str, beta: str, gamma: str) -> Path:
    """The demo's config as a file the UI, the CLI and the admin API can edit."""
    os.environ.setdefault(DEMO_KEY_VAR, "fake-demo-key")
    path = folder / "chain429.yaml"
    body = yaml.safe_dump(demo_settings(port, alpha, beta, gamma), sort_keys=False)
    path.write_text(
        "# chain429 demo config: a scratch file, removed when the demo stops.\n"
        "# Edit it through the web UI (/ui/), the admin API, or by hand.\n" + body,
        encoding="utf-8",
    )
    return path


def say(text: str = "") -> None:
    print(text, flush=True)


async def narrate(base_url: str) -> None:
    headers = {"authorization": f"Bearer {DEMO_KEY}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        for number in (1, 2):
            response = await client.post(
                "/v1/chat/completions",
                json={"model": CHAIN, "messages": [{"role": "user", "content": "Say hello"}]},
            )
            _report(number, response)
        limits = (await client.get("/v1/ratelimits")).json()
        for entry in limits["entries"]:
            if entry["state"] != "available":
                say(
                    f"3. GET /v1/ratelimits: {entry['provider']}/{entry['model']} is "
                    f"{entry['state']} until {entry['until']}; the chain answers meanwhile."
                )
        await _stream(client)


async def _stream(client: httpx.AsyncClient) -> None:
    """One streamed answer, shown as it arrives."""
    body = {"model": CHAIN, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        answered = response.headers.get("x-429chain-provider", "nobody")
        say(f"4. the same with stream=true: HTTP {response.status_code} from {answered}, live:")
        text, chunks = "", 0
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or ():
                piece = (choice.get("delta") or {}).get("content") or ""
                if piece:
                    chunks += 1
                    text += piece
                    print(f"   {piece!r}", flush=True)
        say(f"   = {text!r} in {chunks} chunks, then data: [DONE]")


def _report(number: int, response: httpx.Response) -> None:
    trace = response.headers.get("x-429chain-trace", "")
    answered = response.headers.get("x-429chain-provider", "nobody")
    calls = response.headers.get("x-429chain-attempts", "?")
    say(
        f"{number}. POST /v1/chat/completions model={CHAIN}: HTTP {response.status_code} "
        f"from {answered} after {calls} upstream call(s)"
    )
    say(f"   X-429chain-Trace: {trace}")
    if number == 1:
        say(
            f"   alpha said 429 with Retry-After: {RETRY_AFTER_S}, so the request fell through "
            f"to beta and alpha cools down for {RETRY_AFTER_S} s."
        )
    else:
        say("   alpha was skipped without a call (skip:cooldown): no wasted request, no 429.")


def run_demo(port: int = 3429, once: bool = False) -> None:
    fakes = [
        FakeProvider("alpha", default=Reply.rate_limited(retry_after=str(RETRY_AFTER_S))),
        FakeProvider("beta", default=answers_as_asked("beta", requests_per_minute=1000)),
        FakeProvider("gamma", default=answers_as_asked("gamma")),
    ]
    for fake in fakes:
        fake.start_in_thread()
    # A request log and a config file of its own, gone with the demo, so `chain429
    # stats`, `chain429 logs` and the web UI have something to show and to edit
    # without touching the real ones.
    scratch = tempfile.TemporaryDirectory(prefix="chain429-demo-")
    try:
        path = write_demo_config(Path(scratch.name), port, *(fake.base_url for fake in fakes))
        config = load_config(path)
        database = open_database(f"sqlite:///{scratch.name}/demo.db")
        migrate(database)
        app = create_app(
            config, config_path=path, name="chain429-demo", telemetry=Telemetry(database)
        )
        base_url = f"http://127.0.0.1:{port}"
        story: list[asyncio.Task[None]] = []  # held here, so the task is not collected

        @app.after_server_start
        async def start_story(app: Any, _: Any = None) -> None:
            story.append(asyncio.create_task(_story(app, base_url, once)))

        serve(app, "127.0.0.1", port)
    finally:
        for fake in fakes:
            fake.stop_thread()
        scratch.cleanup()


async def _story(app: Any, base_url: str, once: bool) -> None:
    say("chain429 demo: the proxy with three fake providers, no keys needed")
    say(f"   base URL  {base_url}/v1")
    say(f"   API key   {DEMO_KEY}")
    say(f"   web UI    {base_url}/ui/ (admin key {DEMO_ADMIN_KEY})")
    say(
        f"   chain     {CHAIN}: alpha/fast-8b (always 429) -> beta/steady-8b -> "
        "gamma/big-70b (paid fallback)"
    )
    say()
    try:
        await narrate(base_url)
    except httpx.HTTPError as err:
        print(f"error: the demo could not reach its own proxy: {err}", file=sys.stderr)
    finally:
        if once:  # whatever happened above, --once must end
            app.stop()
    say()
    if once:
        return
    say("Try it with any OpenAI SDK:")
    say(
        f'   OpenAI(base_url="{base_url}/v1", api_key="{DEMO_KEY}")'
        f'.chat.completions.create(model="{CHAIN}", messages=[...])'
    )
    say(f'   ... .embeddings.create(model="{EMBED_CHAIN}", input=[...])  (alpha 429s there too)')
    say(
        f"   curl -s {base_url}/v1/chat/completions -H 'Authorization: Bearer {DEMO_KEY}' "
        f"-H 'Content-Type: application/json' "
        f'-d \'{{"model": "{CHAIN}", "messages": [{{"role": "user", "content": "hi"}}]}}\''
    )
    say("Serving until Ctrl-C.")
