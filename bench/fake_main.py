"""The benchmark's fake provider: plain or streamed answers, chosen per request.

    python bench/fake_main.py --port 0      # prints "listening on http://127.0.0.1:N/v1"

`python -m chain429.testing` answers every request the same way; the benchmark
needs both kinds from one process (chain429 has one upstream), so this runs
`chain429.testing.FakeProvider` with a callable default reply:

- request body with `"stream": true` -> `Reply.stream`: a role chunk, 8 content
  delta chunks, a finish chunk, `data: [DONE]`, in chunked transfer-encoding,
  zero delay;
- anything else -> the default 200 chat completion (as `python -m chain429.testing`).

The stream is built once (model fixed, so every chunk is pre-encoded bytes and
the fake does no JSON work per stream; the chunk id is the same for every
stream, which nothing here checks). The choice per request costs the fake a
`ReceivedRequest` (header dict) and one `bytes.find`, a few microseconds; see
bench/README.md for what that does to the direct plain numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections.abc import Sequence

from chain429.testing import FakeProvider, ReceivedRequest, Reply

# 8 content pieces: what the load generator's stream check expects (bench/loadgen_stream.py).
PIECES = ("Hello", " from", " the", " fake", " provider,", " streamed", " in", " pieces.")
PLAIN = Reply()
STREAM = Reply.stream(model="fake-model", pieces=PIECES)


def choose(req: ReceivedRequest) -> Reply:
    body = req.body
    if body.find(b'"stream"') < 0:  # fast path: the plain benchmark's body never has it
        return PLAIN
    try:
        wants = json.loads(body).get("stream") is True
    except (ValueError, AttributeError):
        return PLAIN  # the fake's own completion; the client sent garbage anyway
    return STREAM if wants else PLAIN


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _serve(host: str, port: int) -> None:
    fake = FakeProvider("fake", choose, record=False)  # record=False: flat memory
    await fake.start(host, port)
    print(f"listening on {fake.base_url}", flush=True)  # run.py reads the port here
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        await done.wait()
    finally:
        await fake.stop()


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Fake provider: streams when asked to.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    args = ap.parse_args(argv)
    loop = _new_loop()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            loop.run_until_complete(_serve(args.host, args.port))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
