"""`chain429 serve --workers N`: how requests/s grow with worker processes (issue 16).

    python bench/workers_bench.py [--workers 1,2] [--rounds 2] [--seconds 8]
                                  [--concurrency 32] [--state redis://127.0.0.1:6379/15]

The real `chain429 serve -c FILE --workers N` (limits on Redis, as `--workers`
above 1 requires, in a namespace of this run's own that is deleted after; a
SQLite request log) in front of the benchmark's zero-latency fake, loaded by
`bench/loadgen.py` over keep-alive connections. Worker counts alternate
(1, 2, 1, 2, ...) so a busy minute on the shared machine hits both alike.

Per run: requests/s, p50/p99, errors, the CPU the whole server used (the
manager and every worker, read from /proc over the measured window), and how
the load spread over the workers (each worker's share of the server's CPU).
Then the ratio of each worker count's median requests/s to one worker's.
The goal (issue 16): `--workers 2` serves at least 1.6x one worker's
requests/s on this 2-core machine — where the fake, Redis and the load
generator share the same two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from proxy_main import CHAIN, PROXY_KEY  # noqa: E402
from run import (  # noqa: E402
    cpu_seconds,
    drop_keys,
    free_port,
    loadgen_argv,
    read_line,
    say,
    started,
    stop,
    wait_health,
)


def config_yaml(upstream: str, state: str, namespace: str, db_path: Path) -> str:
    return "\n".join(
        [
            "version: 1",
            "settings:",
            f"  apiKeys: [{PROXY_KEY}]",
            f"  defaultChain: {CHAIN}",
            f"  stateStore: {state}",
            f"  stateNamespace: {namespace}",
            f"  dbPath: {db_path}",
            "providers:",
            f"  - {{id: fake, type: generic-openai, baseUrl: '{upstream}', apiKey: bench}}",
            "chains:",
            f"  - name: {CHAIN}",
            "    entries:",
            "      - {provider: fake, model: fake-model}",
            "",
        ]
    )


def tree(pid: int) -> list[int]:
    """`pid` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def redis_pids() -> list[int]:
    """The redis-server processes on this machine (their CPU is part of the cost here)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "redis-server":
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def one_run(
    args: argparse.Namespace, config: Path, workers: int, fake_pid: int, log: Any
) -> dict[str, Any]:
    port = free_port()
    argv = [sys.executable, "-m", "chain429.cli.main", "serve", "-c", str(config)]
    argv += ["--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(argv, stdout=log, stderr=log)
    try:
        wait_health(port, proc, 60)
        time.sleep(1.0)  # every worker up, not only the first to answer /health
        gen = subprocess.Popen(
            loadgen_argv(port, args.concurrency, args, PROXY_KEY, "plain"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(args.warmup)
        pids = tree(proc.pid)
        others = {"fake": [fake_pid], "load generator": [gen.pid], "redis": redis_pids()}
        watched = pids + [p for group in others.values() for p in group]
        cpu0 = {p: cpu_seconds(p) for p in watched}
        wall0 = time.monotonic()
        time.sleep(args.seconds * 0.9)
        cpu1 = {p: cpu_seconds(p) for p in watched}
        wall = time.monotonic() - wall0
        out, err = gen.communicate(timeout=args.warmup + args.seconds + 30)
        if gen.returncode != 0:
            raise RuntimeError(f"load generator failed: {err.decode()}")
        result = dict(json.loads(out))
        used = {p: (cpu1[p] - cpu0[p]) / wall for p in watched}
        busy = sorted((used[p] for p in pids if p != proc.pid), reverse=True)
        result["server_cpu"] = sum(used[p] for p in pids)
        result["others_cpu"] = {
            name: round(sum(used[p] for p in group), 2) for name, group in others.items()
        }
        result["worker_cpu"] = [round(share, 2) for share in busy if share > 0.02]
        return result
    finally:
        stop(proc, f"chain429 --workers {workers}")


def main() -> int:
    ap = argparse.ArgumentParser(description="Requests/s of serve --workers N.")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--state", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    namespace = f"chain429-workers-bench-{os.getpid()}"
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="chain429-workers-") as tmp:
        folder = Path(tmp)
        log = open(folder / "chain429.log", "wb")  # noqa: SIM115 - closed with the directory
        fake_argv = [sys.executable, str(BENCH / "fake_main.py"), "--port", "0"]
        try:
            with started(fake_argv, "fake", None) as fake:
                upstream = read_line(fake, 10).rsplit(" ", 1)[-1]
                config = folder / "chain429.yaml"
                config.write_text(config_yaml(upstream, args.state, namespace, folder / "log.db"))
                for round_ in range(args.rounds):
                    for workers in counts:
                        say(f"round {round_ + 1}: --workers {workers}")
                        result = one_run(args, config, workers, fake.pid, log)
                        runs.append({"workers": workers, **result})
        finally:
            log.close()
            drop_keys(args.state, namespace)
    print(
        f"{'workers':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'server cpu':>10}  per worker / the others' cpu"
    )
    for run in runs:
        print(
            f"{run['workers']:>7} {run['rps']:>8,.0f} {run['p50_ms']:>8.2f} {run['p99_ms']:>8.2f} "
            f"{run['errors']:>6} {run['server_cpu'] * 100:>9.0f}%  {run['worker_cpu']} / "
            + ", ".join(f"{name} {share:.0%}" for name, share in run["others_cpu"].items())
        )
    base = statistics.median(r["rps"] for r in runs if r["workers"] == counts[0])
    for workers in counts[1:]:
        median = statistics.median(r["rps"] for r in runs if r["workers"] == workers)
        print(f"--workers {workers}: {median / base:.2f}x --workers {counts[0]} (medians)")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
