"""The benchmark's fake provider: plain or streamed answers, chosen per request.

    python bench/fake_main.py --port 0      # prints "listening on http://127.0.0.1:N/v1"

Like `chain429 fake` and `python -m chain429.fakes`, it answers a streaming
request with a stream (`chain429.fake_replies.in_kind`); its stream has the
fixed shape the load generator checks:

- request body with `"stream": true` -> `Reply.stream`: a role chunk, 8 content
  delta chunks, a finish chunk, `data: [DONE]`, in chunked transfer-encoding,
  zero delay;
- anything else -> the default 200 chat completion.

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
import signal
from collections.abc import Sequence

from chain429.fakes.provider import FakeProvider, Reply
from chain429.fakes.replies import in_kind

# 8 content pieces: what the load generator's stream check expects (bench/loadgen_stream.py).
PIECES = ("Hello", " from", " the", " fake", " provider,", " streamed", " in", " pieces.")
# The fake's own choice by kind (no JSON parsed unless the body says "stream").
choose = in_kind(Reply(), Reply.stream(model="fake-model", pieces=PIECES))


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
