"""Costs that must stay flat: chain length, request-log size, and memory.

    python bench/shape_bench.py [--seconds 4] [--rows 1000000] [--streams 1000] [--json PATH]

bench/run.py measures one entry with no request log. Issue 15 asks more of the
proxy: a chain of 20 entries of which 19 are skipped costs at most 10 % more
than one entry; a request log of a million rows costs nothing more than an
empty one; idle RSS stays at most 70 MiB and 1,000 open streams at most
200 MiB. This runs each of those shapes the way a user runs chain429 — the
real `chain429 serve` with a YAML file — against the benchmark's zero-latency
fake, and prints one row per shape (plain requests, c=1 and c=32).

- **one entry**: the request log on (as `serve` always keeps one), in an
  empty SQLite file.
- **20 entries, 19 skipped**: the first 19 entries allow one request a day
  (`rateLimits.requestsPerDay: 1`), so after the warm-up every request skips
  them (`skip:limited`, known exhausted) and the 20th answers.
- **log, 1M rows**: the SQLite file bench/stats_bench.py fills (`--rows`
  requests over 30 days, built once and reused), copied so this run's writes
  do not change it.
- **1,000 open streams**: a `chain429 fake` that sends its first content chunk and then
  holds the stream open; the RSS of chain429 is read while every stream is
  open (before `streamIdleTimeoutMs` ends them).

Everything runs on this machine's shared cores: compare rows of one run, not
runs of different days.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from proxy_main import CHAIN, PROXY_KEY  # noqa: E402
from run import HOST, free_port, measure, read_line, say, started, stop, wait_health  # noqa: E402

STATS_DB = "/tmp/chain429-stats-bench.db"  # bench/stats_bench.py's default file


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def config_yaml(upstream: str, *, entries: int = 1, db_path: str | None = None) -> str:
    """The benchmark chain as a user writes it; `entries - 1` known-exhausted entries first."""
    lines = [
        "version: 1",
        "settings:",
        f"  apiKeys: [{PROXY_KEY}]",
        f"  defaultChain: {CHAIN}",
        *([f"  dbPath: {db_path}"] if db_path else []),  # else $CHAIN429_HOME/chain429.db
        "providers:",
        f"  - {{id: fake, type: generic-openai, baseUrl: '{upstream}', apiKey: bench}}",
        "chains:",
        f"  - name: {CHAIN}",
        "    entries:",
    ]
    for n in range(entries - 1):
        lines.append(
            f"      - {{provider: fake, model: spent-{n}, rateLimits: {{requestsPerDay: 1}}}}"
        )
    lines.append("      - {provider: fake, model: fake-model}")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def chain429(config: str, workdir: Path, log: Any) -> Iterator[tuple[int, int]]:
    """`chain429 serve` on a free port with this config; yields (port, pid)."""
    path = workdir / f"chain429-{time.monotonic_ns()}.yaml"
    path.write_text(config)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "chain429.cli.main",
        "serve",
        "-c",
        str(path),
        "--port",
        str(port),
    ]
    env = {**os.environ, "CHAIN429_HOME": str(workdir)}
    proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env)
    try:
        wait_health(port, proc, 30)
        yield port, proc.pid
    finally:
        stop(proc, "chain429")


async def _hold_streams(port: int, count: int) -> list[asyncio.StreamWriter]:
    """`count` streaming requests, each read up to its first event and kept open."""
    body = json.dumps(
        {"model": CHAIN, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Authorization: Bearer {PROXY_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()

    async def one() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(head + body)
        await writer.drain()
        seen = b""
        while b"data:" not in seen:
            chunk = await asyncio.wait_for(reader.read(4096), 15)
            if not chunk:
                raise RuntimeError(f"stream closed before its first event: {seen[:200]!r}")
            seen += chunk
        return writer

    writers: list[asyncio.StreamWriter] = []
    for start in range(0, count, 100):  # in waves: no SYN flood against one listener
        writers += await asyncio.gather(*(one() for _ in range(min(100, count - start))))
    return writers


def open_streams_rss(workdir: Path, log: Any, count: int) -> dict[str, float]:
    """chain429's RSS idle, then with `count` streams held open mid-answer."""
    fake_port = free_port()
    fake_argv = [sys.executable, "-m", "chain429.cli.main", "fake", "--port", str(fake_port)]
    fake_argv += ["-r", "ok,stall=2", "--loop"]
    with started(fake_argv, "stalling fake", log):
        time.sleep(1.0)  # the fake binds before it prints; a second is plenty
        with chain429(config_yaml(f"http://{HOST}:{fake_port}/v1"), workdir, log) as (port, pid):
            idle = rss_mib(pid)

            async def run() -> float:
                writers = await _hold_streams(port, count)
                try:
                    await asyncio.sleep(1.0)
                    return rss_mib(pid)
                finally:
                    for writer in writers:
                        writer.close()

            held = asyncio.run(run())
    return {"idle_rss_mib": round(idle, 1), "streams": count, "streams_rss_mib": round(held, 1)}


def shape_name(shape: dict[str, Any]) -> str:
    return "skipped" if shape.get("entries", 1) > 1 else "log" if shape.get("db_path") else "one"


def throughput(
    args: argparse.Namespace, workdir: Path, log: Any, upstream: str, **shape: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {}
    with chain429(config_yaml(upstream, **shape), workdir, log) as (port, pid):
        for conc in (1, 32):
            spy = f"{args.py_spy}-{shape_name(shape)}.txt" if args.py_spy and conc == 32 else None
            result = measure(port, conc, args, PROXY_KEY, pid, "plain", spy)
            cpu_ms = result["server_cpu"] * 1000 / result["rps"] if result["rps"] else None
            row[f"c{conc}"] = {
                "rps": round(result["rps"]),
                "p50_ms": round(result["p50_ms"], 3),
                "cpu_ms_per_request": round(cpu_ms, 3) if cpu_ms else None,
                "errors": result["errors"],
            }
        row["rss_mib"] = round(rss_mib(pid), 1)
    return row


def large_log(rows: int) -> Path:
    """bench/stats_bench.py's request log of `rows` rows, filled once and reused."""
    big = Path(STATS_DB)
    if not big.exists():
        say(f"filling {rows:,} rows into {big} (bench/stats_bench.py; once)")
        # Its exit status is about its own goals (stats query times), not the file.
        subprocess.run(
            [sys.executable, str(BENCH / "stats_bench.py"), "--rows", str(rows), "--runs", "1"],
            check=False,
            stdout=subprocess.DEVNULL,
        )
        if not big.exists():
            raise RuntimeError(f"bench/stats_bench.py did not make {big}")
    return big


def main() -> int:
    ap = argparse.ArgumentParser(description="Chain length, log size and memory costs.")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows in the large request log")
    ap.add_argument("--streams", type=int, default=1000, help="streams held open for the RSS row")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument(
        "--only",
        default="one,skipped,log,memory",
        help="the rows to run, comma-separated, of one,skipped,log,memory (the first is the base)",
    )
    ap.add_argument(
        "--py-spy",
        metavar="PATH",
        help="profile chain429 at c=32 of each row into PATH-<row>.txt (bench/profile_summary.py)",
    )
    args = ap.parse_args()
    only = set(args.only.split(","))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="chain429-shape-") as tmp:
        workdir = Path(tmp)
        log = open(workdir / "chain429.log", "wb")  # noqa: SIM115 - closed with the directory
        fake_argv = [sys.executable, str(BENCH / "fake_main.py"), "--port", "0"]
        with started(fake_argv, "fake", None) as fake:
            upstream = read_line(fake, 10).rsplit(" ", 1)[-1]
            if "one" in only:
                say("one entry, an empty SQLite request log")
                results["one entry"] = throughput(args, workdir, log, upstream)
            if "skipped" in only:
                say("20 entries, 19 known exhausted")
                results["20 entries, 19 skipped"] = throughput(
                    args, workdir, log, upstream, entries=20
                )
            if "log" in only:
                copy = workdir / "big.db"
                shutil.copyfile(large_log(args.rows), copy)
                say(f"one entry, SQLite request log of {args.rows:,} rows")
                results[f"log, {args.rows:,} rows"] = throughput(
                    args, workdir, log, upstream, db_path=str(copy)
                )
        if "memory" in only:
            say(f"memory: idle, then {args.streams} open streams")
            results["memory"] = open_streams_rss(workdir, log, args.streams)
        log.close()
    header = ("shape", "c=1 req/s", "p50 ms", "c=32 req/s", "cpu ms/req", "RSS MiB")
    print(f"{header[0]:<28}" + "".join(f"{h:>11}" for h in header[1:]))
    base = results["one entry"]["c32"]["cpu_ms_per_request"] if "one entry" in results else None
    for name, row in results.items():
        if name == "memory":
            continue
        c1, c32 = row["c1"], row["c32"]
        extra = f"  ({(c32['cpu_ms_per_request'] / base - 1) * 100:+.0f}% cpu)" if base else ""
        print(
            f"{name:<28}{c1['rps']:>11,}{c1['p50_ms']:>11.3f}{c32['rps']:>11,}"
            f"{c32['cpu_ms_per_request']:>11.3f}{row['rss_mib']:>11.1f}{extra}"
        )
    if memory := results.get("memory"):
        print(
            f"idle RSS {memory['idle_rss_mib']} MiB; with {memory['streams']} open streams "
            f"{memory['streams_rss_mib']} MiB"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
