"""chain429's own benchmark: fake provider, chain429 in front of it, load on both.

    python bench/run.py [--mode plain|stream|both] [--seconds 5] [--json results.json]
                        [--py-spy prof.txt] [--check] [--write-baseline]
                        [--state redis://127.0.0.1:6379/15]

Three processes besides this one: the fake provider (`bench/fake_main.py`:
plain completions, or 8-chunk SSE streams when the request says
`"stream": true`), chain429 (`bench/proxy_main.py`, one worker) and, per
measurement, the load generator (`bench/loadgen.py`, `--stream` for streams).
With `--state URL`, a second chain429 shares its limits through that Redis
(target "redis"), measured after the in-memory one, and its cost over memory
is reported against the Redis goals; its keys are deleted afterwards.
The generator is its own process so its CPU time is never shared with this
script's GIL, and so a measurement that hangs can be killed without killing
the rest. Everything we start is stopped in `finally`, with bounded waits.

The table goes to stdout; progress goes to stderr. `--check` compares the run
with bench/baseline.json (bench/guard.py says which figures and why) and exits 1
when one is more than 15% worse or a goal is missed; `--write-baseline` makes the
run the new baseline and redraws bench/README.md's table from it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # proxy_main's constants, when run as a script
import guard  # noqa: E402
from proxy_main import PROXY_KEY  # noqa: E402
from report import added, goal_lines, goals, render, state_cost  # noqa: E402

HOST = "127.0.0.1"
PATH = "/v1/chat/completions"
MODES = {"plain": ("plain",), "stream": ("stream",), "both": ("plain", "stream")}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    # Racy in principle (the port is free only until someone else binds it), but
    # serve() takes a port, not a socket, and loopback ephemeral ports rarely collide.
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The child's first stdout line, or an error if it dies or stays silent."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError(f"{proc.args!r} printed nothing in {timeout} s")
    line = proc.stdout.readline().decode().strip()
    if not line:
        raise RuntimeError(f"{proc.args!r} exited with {proc.wait(5)} before listening")
    return line


def wait_health(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chain429 exited with {proc.returncode} before /health")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection(HOST, port, timeout=1)
            try:
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            finally:
                conn.close()
        time.sleep(0.1)
    raise RuntimeError(f"chain429 /health did not answer within {timeout} s")


def stop(proc: subprocess.Popen[bytes] | None, name: str, grace: float = 10.0) -> None:
    """SIGTERM (chain429 stops gracefully, writing its profile), then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        say(f"{name} ignored SIGTERM for {grace} s; killing it")
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def started(argv: list[str], name: str, log: IO[bytes] | None) -> Iterator[subprocess.Popen[bytes]]:
    # stdout is a pipe only for the fake (it prints its port, then nothing; its
    # stderr is ours, so a crash shows). chain429's output goes to a log file so a
    # chatty child can never block on a full pipe.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE if log is None else log, stderr=log)
    try:
        yield proc
    finally:
        stop(proc, name)


def loadgen_argv(
    port: int, concurrency: int, args: argparse.Namespace, key: str | None, mode: str
) -> list[str]:
    argv = [sys.executable, str(BENCH / "loadgen.py"), "--port", str(port), "--path", PATH]
    argv += ["--concurrency", str(concurrency), "--seconds", str(args.seconds)]
    argv += ["--warmup", str(args.warmup)]
    argv += ["--stream"] if mode == "stream" else []
    return argv + (["--api-key", key] if key else [])


def spy_path(path: str, mode: str, modes: Sequence[str]) -> str:
    """--py-spy's file for this mode: as given for one mode, "-plain"/"-stream" for both."""
    if len(modes) == 1:
        return path
    out = Path(path)
    return str(out.with_name(f"{out.stem}-{mode}{out.suffix}"))


def py_spy_argv(pid: int, out: str, seconds: float) -> list[str]:
    exe = Path(sys.executable).parent / "py-spy"  # installed into the venv, maybe not on PATH
    argv = [str(exe if exe.exists() else "py-spy"), "record", "--pid", str(pid)]
    # Blocking sampling (py-spy pauses chain429 for each sample) on purpose: --nonblocking
    # reads stacks while they change; in our runs it truncated 13-67% of stacks and
    # over-weighted frames parked in syscalls. The pauses cost a few percent of rps.
    argv += ["--duration", str(max(1, int(seconds))), "--rate", "250"]
    # .txt -> collapsed stacks, which bench/profile_summary.py turns into a table.
    fmt = {".json": "speedscope", ".txt": "raw"}.get(Path(out).suffix, "flamegraph")
    return [*argv, "--format", fmt, "-o", out]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def measure(
    port: int,
    concurrency: int,
    args: argparse.Namespace,
    key: str | None,
    server_pid: int,
    mode: str,
    spy: str | None,
) -> dict[str, Any]:
    """One load run. The server's CPU share over the measured window tells whether it
    was saturated (~100%: the numbers are its capacity) or waiting on something else."""
    budget = args.warmup + args.seconds + 30  # the generator bounds itself; this is a backstop
    gen = subprocess.Popen(
        loadgen_argv(port, concurrency, args, key, mode),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    spy_proc: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(args.warmup)  # the generator's window starts about now
        if spy:  # sample the measured window, not the warm-up
            spy_proc = subprocess.Popen(
                py_spy_argv(server_pid, spy, args.seconds),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        cpu0, wall0 = cpu_seconds(server_pid), time.monotonic()
        time.sleep(args.seconds * 0.9)  # inside the window even if the generator started late
        cpu1, wall1 = cpu_seconds(server_pid), time.monotonic()
        out, err = gen.communicate(timeout=budget)
        if gen.returncode != 0:
            raise RuntimeError(f"load generator failed ({gen.returncode}): {err.decode()}")
        if spy_proc is not None:
            _, spy_err = spy_proc.communicate(timeout=args.seconds + 30)
            if spy_proc.returncode != 0:
                say(f"py-spy failed ({spy_proc.returncode}): {spy_err.decode().strip()}")
            else:
                say(f"py-spy profile written to {spy}")
        result = dict(json.loads(out))
        result["server_cpu"] = (cpu1 - cpu0) / (wall1 - wall0)
        return result
    finally:
        for proc in (gen, spy_proc):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)


def measure_all(
    args: argparse.Namespace,
    fake: tuple[int, int],
    proxy: tuple[int, int],
    redis: tuple[int, int] | None = None,
    others: Sequence[tuple[str, tuple[int, int], str | None]] = (),
) -> list[dict[str, Any]]:
    """Every (mode, target, concurrency) run; `fake`, `proxy`, `redis` are (port, pid);
    `others` (name, (port, pid), key): other proxies measured the same way (`--other`)."""
    results = []
    top = max(args.concurrency)
    modes = MODES[args.mode]
    targets = [("direct", fake, None), ("chain429", proxy, PROXY_KEY)]
    if redis is not None:
        targets.append(("redis", redis, PROXY_KEY))
    targets += others
    for mode in modes:
        for target, (port, pid), key in targets:
            for conc in args.concurrency:
                say(f"{mode} {target} c={conc}: {args.warmup:g} s warm-up + {args.seconds:g} s")
                spy = None
                if args.py_spy and target == "chain429" and conc == top:
                    spy = spy_path(args.py_spy, mode, modes)
                result = measure(port, conc, args, key, pid, mode, spy)
                results.append({"target": target, **result})
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Benchmark chain429 against a zero-latency fake provider."
    )
    ap.add_argument(
        "--mode",
        choices=sorted(MODES),
        default="both",
        help="plain completions, SSE streams, or both (default)",
    )
    ap.add_argument("--seconds", type=float, default=5.0, help="measured time per run")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured time before each run")
    ap.add_argument(
        "--concurrency",
        type=lambda s: sorted({int(c) for c in s.split(",")}),
        default=[1, 32],
        help="comma-separated connection counts (default 1,32)",
    )
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    ap.add_argument(
        "--py-spy",
        metavar="PATH",
        help="py-spy chain429 during the top-concurrency run of each mode "
        "(.txt -> collapsed stacks, .json -> speedscope, else flamegraph SVG; "
        "with --mode both, PATH gets -plain / -stream before its suffix)",
    )
    ap.add_argument(
        "--profile",
        metavar="PSTATS",
        help="run chain429 under cProfile; stats written on stop "
        "(slows chain429: its numbers are then not the benchmark's)",
    )
    ap.add_argument(
        "--check",
        action="store_true",
        help="compare with the baseline; exit 1 if a figure is >15%% worse or a goal is missed",
    )
    ap.add_argument(
        "--baseline", default=str(guard.BASELINE), help="for --check (default: bench/baseline.json)"
    )
    ap.add_argument(
        "--write-baseline",
        action="store_true",
        help="make this run bench/baseline.json and redraw bench/README.md's table from it",
    )
    ap.add_argument("--note", default="", help="with --write-baseline: a word on the conditions")
    ap.add_argument(
        "--other",
        metavar="NAME=COMMAND",
        action="append",
        default=[],
        help="also measure another OpenAI-compatible proxy, started by COMMAND (a shell "
        "command; {upstream} is the fake's base URL, {port} the port to serve on) and named "
        "NAME in the tables; it must answer GET /health and serve the chain `bench`; its "
        "process is the one measured (exec, don't fork); repeatable",
    )
    ap.add_argument(
        "--other-key", metavar="KEY", help="the API key the --other proxies take (Bearer)"
    )
    ap.add_argument(
        "--state",
        metavar="URL",
        help="also measure chain429 with its limits in this Redis (e.g. "
        "redis://127.0.0.1:6379/15), against the in-memory store",
    )
    return ap.parse_args(argv)


def drop_keys(url: str, namespace: str) -> None:
    """Delete the keys the Redis run wrote (its namespace only)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match="{" + namespace + "}:*", count=1000):
            client.delete(key)
    finally:
        client.close()


@contextlib.contextmanager
def redis_proxy(
    args: argparse.Namespace, upstream: str, log: IO[bytes]
) -> Iterator[tuple[int, int] | None]:
    """With --state: a second chain429 on that Redis, as (port, pid); else None."""
    if not args.state:
        yield None
        return
    namespace = f"chain429-bench-{os.getpid()}"
    port = free_port()
    argv = [sys.executable, str(BENCH / "proxy_main.py"), "--upstream", upstream]
    argv += ["--port", str(port), "--state", args.state, "--namespace", namespace]
    try:
        with started(argv, "chain429 (redis)", log) as proc:
            wait_health(port, proc, timeout=30)
            yield port, proc.pid
    finally:
        drop_keys(args.state, namespace)


@contextlib.contextmanager
def other_proxy(
    spec: str, key: str | None, upstream: str, log: IO[bytes]
) -> Iterator[tuple[str, tuple[int, int], str | None]]:
    """An `--other NAME=COMMAND` proxy, started and healthy: (name, (port, pid), key)."""
    name, _, command = spec.partition("=")
    if not name or not command:
        raise SystemExit(f"--other wants NAME=COMMAND, got {spec!r}")
    port = free_port()
    argv = shlex.split(command.format(upstream=upstream, port=port))
    with started(argv, name, log) as proc:
        wait_health(port, proc, timeout=60)
        say(f"{name} (pid {proc.pid}) on :{port}")
        yield name, (port, proc.pid), key


def cpu_per_request(results: Sequence[dict[str, Any]]) -> str:
    """The least noisy figure: the CPU each target spent per answer (its CPU share / rate)."""
    lines = ["CPU ms per answer (server CPU / rate):"]
    for r in results:
        if r["rps"]:
            cpu_ms = r["server_cpu"] * 1000 / r["rps"]
            lines.append(f"  {r['mode']:<7}{r['target']:<10} c={r['concurrency']:<4}{cpu_ms:8.3f}")
    return "\n".join(lines)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # The default SIGTERM action ends us without running `finally`, which would
    # orphan the fake and chain429; an exception unwinds through the cleanup.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with tempfile.TemporaryDirectory(prefix="chain429-bench-") as tmp:
        log_path = Path(tmp) / "chain429.log"
        with contextlib.ExitStack() as stack:
            fake = stack.enter_context(
                started([sys.executable, str(BENCH / "fake_main.py"), "--port", "0"], "fake", None)
            )
            line = read_line(fake, timeout=15)  # "listening on http://127.0.0.1:N/v1"
            upstream = line.rsplit(" ", 1)[-1]
            fake_port = int(upstream.rsplit(":", 1)[1].split("/", 1)[0])
            proxy_port = free_port()
            argv_proxy = [sys.executable, str(BENCH / "proxy_main.py"), "--upstream", upstream]
            argv_proxy += ["--port", str(proxy_port)]
            if args.profile:
                argv_proxy += ["--profile", os.path.abspath(args.profile)]
            log = stack.enter_context(log_path.open("wb"))
            proxy = stack.enter_context(started(argv_proxy, "chain429", log))
            try:
                wait_health(proxy_port, proxy, timeout=30)
            except RuntimeError:
                say(log_path.read_text(errors="replace")[-4000:])
                raise
            say(f"fake on :{fake_port}, chain429 (pid {proxy.pid}) on :{proxy_port}")
            redis = stack.enter_context(redis_proxy(args, upstream, log))
            others = [
                stack.enter_context(other_proxy(spec, args.other_key, upstream, log))
                for spec in args.other
            ]
            results = measure_all(
                args, (fake_port, fake.pid), (proxy_port, proxy.pid), redis, others
            )
        if any(r["errors"] for r in results if r["target"] == "chain429"):
            say("chain429 answered with errors; the end of its log:")  # the why of a 4xx/5xx
            say(log_path.read_text(errors="replace")[-3000:])
        if args.profile:
            say(f"cProfile stats written to {args.profile}")
    extra = added(results, args.concurrency)
    state = state_cost(results, args.concurrency)
    met = goals(extra, state)
    print(render(results, extra, state))
    print()
    print(cpu_per_request(results))
    print()
    print("\n".join(goal_lines(met)))
    if args.json:
        report = {"results": results, "added": extra, "state": state, "goals": met}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        say(f"results written to {args.json}")
    failed = args.check and not all(g["met"] for g in met.values())
    if args.check:
        ok, text = guard.check(results, Path(args.baseline))
        print()
        print(text)
        failed = failed or not ok
    if args.write_baseline and any(r["errors"] for r in results if r["target"] == "chain429"):
        say("not writing a baseline from a run where chain429 answered with errors")
        return 1
    if args.write_baseline:
        guard.write_baseline(results, args.seconds, args.note)
        say(f"baseline written to {guard.BASELINE}; {guard.README} redrawn from it")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
