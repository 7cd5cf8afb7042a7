"""`chain429 demo`: the waterfall in action with fake providers and no keys.

Three fake providers run on loopback: `alpha` always answers 429, `beta`
answers, `gamma` stands by as the paid fallback. The demo sends a few
requests through the real proxy and narrates what happened, then keeps
serving so the user can point an OpenAI SDK at it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from typing import Any

import httpx
from sanic import Sanic

from chain429.config import Config
from chain429.database import migrate, open_database
from chain429.server import create_app
from chain429.serving import serve
from chain429.telemetry import Telemetry
from chain429.testing import FakeProvider, Reply

DEMO_KEY = "chain429-demo-key"
CHAIN = "demo"
RETRY_AFTER_S = 30


def demo_config(port: int, alpha: str, beta: str, gamma: str) -> Config:
    return Config.model_validate(
        {
            "version": 1,
            "settings": {"port": port, "apiKeys": [DEMO_KEY], "defaultChain": CHAIN},
            "providers": [
                {
                    "id": "alpha",
                    "name": "Alpha (free, rate-limited)",
                    "type": "generic-openai",
                    "baseUrl": alpha,
                    "apiKey": "fake",
                },
                {
                    "id": "beta",
                    "name": "Beta (free)",
                    "type": "generic-openai",
                    "baseUrl": beta,
                    "apiKey": "fake",
                },
                {
                    "id": "gamma",
                    "name": "Gamma (paid)",
                    "type": "generic-openai",
                    "baseUrl": gamma,
                    "apiKey": "fake",
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
            ],
        }
    )


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
        FakeProvider("beta"),
        FakeProvider("gamma"),
    ]
    for fake in fakes:
        fake.start_in_thread()
    # A request log of its own, gone with the demo, so `chain429 stats` and
    # `chain429 logs` have something to show without touching the real one.
    scratch = tempfile.TemporaryDirectory(prefix="chain429-demo-")
    try:
        config = demo_config(port, *(fake.base_url for fake in fakes))
        database = open_database(f"sqlite:///{scratch.name}/demo.db")
        migrate(database)
        app = create_app(config, name="chain429-demo", telemetry=Telemetry(database))
        base_url = f"http://127.0.0.1:{port}"
        app.ctx.demo_tasks = []

        @app.after_server_start
        async def start_story(app: Sanic, _: Any = None) -> None:
            app.ctx.demo_tasks.append(asyncio.create_task(_story(app, base_url, once)))

        serve(app, "127.0.0.1", port)
    finally:
        for fake in fakes:
            fake.stop_thread()
        scratch.cleanup()


async def _story(app: Sanic, base_url: str, once: bool) -> None:
    say("chain429 demo: the proxy with three fake providers, no keys needed")
    say(f"   base URL  {base_url}/v1")
    say(f"   API key   {DEMO_KEY}")
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
    say(
        f"   curl -s {base_url}/v1/chat/completions -H 'Authorization: Bearer {DEMO_KEY}' "
        f"-H 'Content-Type: application/json' "
        f'-d \'{{"model": "{CHAIN}", "messages": [{{"role": "user", "content": "hi"}}]}}\''
    )
    say("Serving until Ctrl-C.")
