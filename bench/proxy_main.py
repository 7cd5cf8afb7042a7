"""chain429 as the benchmark runs it: one process, one chain, one entry (the fake).

    python bench/proxy_main.py --upstream http://127.0.0.1:N/v1 --port M [--profile out.pstats]
                               [--state redis://127.0.0.1:6379/15 --namespace NS]

The config is built in code rather than read from YAML so the benchmark needs
no file on disk and cannot drift from a user's config. apiKeys is set because
authentication is on every real deployment's request path.

`--profile` runs the whole server under cProfile and writes a pstats file when
Sanic stops (SIGINT/SIGTERM). cProfile roughly doubles the cost of every Python
call, so absolute numbers under it are not the benchmark's; the proportions are
what it is for. `py-spy` (see run.py --py-spy) samples without that distortion.
"""

from __future__ import annotations

import argparse
import cProfile
from collections.abc import Sequence
from typing import Any

from chain429.config.model import Config
from chain429.server.app import create_app
from chain429.server.serving import serve

PROXY_KEY = "bench-proxy-key"
CHAIN = "bench"


def bench_config(
    upstream: str, state: str | None = None, namespace: str = "chain429-bench"
) -> dict[str, Any]:
    settings: dict[str, Any] = {"apiKeys": [PROXY_KEY], "defaultChain": CHAIN}
    if state:  # the Redis state store: every request reserves, records and finishes there
        settings |= {"stateStore": state, "stateNamespace": namespace}
    return {
        "version": 1,
        "settings": settings,
        "providers": [
            {"id": "fake", "type": "generic-openai", "baseUrl": upstream, "apiKey": "bench"}
        ],
        "chains": [{"name": CHAIN, "entries": [{"provider": "fake", "model": "fake-model"}]}],
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Serve chain429 in front of one fake provider.")
    ap.add_argument("--upstream", required=True, help="the fake's base URL, ending in /v1")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--profile", metavar="PSTATS", help="write cProfile stats here on stop")
    ap.add_argument("--state", metavar="URL", help="share limits through this Redis")
    ap.add_argument("--namespace", default="chain429-bench", help="with --state: key prefix")
    args = ap.parse_args(argv)
    config = bench_config(args.upstream, args.state, args.namespace)
    app = create_app(Config.model_validate(config), name="chain429-bench")
    if not args.profile:
        serve(app, args.host, args.port)
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        # Sanic handles SIGINT/SIGTERM itself and returns from run() after a
        # graceful stop, so the stats are written on the normal path.
        serve(app, args.host, args.port)
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
