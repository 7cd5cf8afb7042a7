"""How long `chain429 --version`, `--help` and `validate FILE` take to start and finish.

    python bench/cli_startup.py [--runs 20] [--json startup.json] [--check]

Each command runs `--runs` times (after two unmeasured runs that warm the OS's
file cache and write Python's bytecode cache), as a user runs it: the installed
`chain429` script next to this interpreter, a fresh process each time. It
prints per command the median and best wall time, and the median CPU time
(user + system, from the kernel's accounting of the child): on a shared
machine the wall time moves with whatever else runs, the CPU time much less.
`python -c pass` is measured the same way, as the floor any Python program pays.

Goal (issue 15): each command in at most 250 ms. `--check` exits 1 when a median
wall time is over it. The `validate` file is a small valid config written to a
temporary directory, with its one key given as a plain value.

What the commands import is checked by tests/cli/test_startup.py (not their
time: timings belong here). `python -X importtime -m chain429.cli.main --help`
shows where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GOAL_MS = 250.0

CONFIG = """\
version: 1
providers:
  - id: fake
    name: Fake
    type: openai
    baseUrl: http://127.0.0.1:9/v1
    apiKey: sk-not-used
chains:
  - name: default
    entries:
      - provider: fake
        model: m
"""


def chain429_script() -> str:
    """The `chain429` installed beside this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "chain429"
    found = str(beside) if beside.exists() else shutil.which("chain429")
    if found is None:
        raise SystemExit("no chain429 script: pip install -e . into this interpreter's venv")
    return found


def child_env() -> dict[str, str]:
    """Ours, but with bytecode caching on: an installed chain429 has its .pyc files, and
    with PYTHONDONTWRITEBYTECODE set (some shells and CI images set it) every run of an
    editable install would compile chain429's modules again (~0.1 s)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("CHAIN429_CONFIG", None)
    return env


def run_once(argv: Sequence[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run; the command must exit 0."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60, env=child_env()
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(name: str, argv: Sequence[str], runs: int) -> dict[str, Any]:
    for _ in range(2):
        run_once(argv)
    samples = [run_once(argv) for _ in range(runs)]
    walls = [wall * 1000 for wall, _ in samples]
    cpus = [cpu * 1000 for _, cpu in samples]
    return {
        "command": name,
        "runs": runs,
        "median_ms": statistics.median(walls),
        "min_ms": min(walls),
        "cpu_median_ms": statistics.median(cpus),
    }


def commands(config: Path) -> list[tuple[str, list[str], bool]]:
    """(name, argv, held to the goal)."""
    script = chain429_script()
    return [
        ("python -c pass", [sys.executable, "-c", "pass"], False),
        ("chain429 --version", [script, "--version"], True),
        ("chain429 --help", [script, "--help"], True),
        ("chain429 validate FILE", [script, "validate", str(config)], True),
    ]


def render(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'command':<24}{'median ms':>11}{'min ms':>9}{'cpu ms':>9}  goal"]
    for row in rows:
        goal = ""
        if row["goal_ms"] is not None:
            goal = "ok" if row["median_ms"] <= row["goal_ms"] else "MISSED"
            goal += f" (<= {row['goal_ms']:g})"
        lines.append(
            f"{row['command']:<24}{row['median_ms']:>11.1f}{row['min_ms']:>9.1f}"
            f"{row['cpu_median_ms']:>9.1f}  {goal}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Time the CLI's start-up.")
    ap.add_argument("--runs", type=int, default=20, help="measured runs per command")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON here")
    ap.add_argument("--check", action="store_true", help="exit 1 if a median misses the goal")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chain429-startup-") as tmp:
        config = Path(tmp) / "chain429.yaml"
        config.write_text(CONFIG)
        rows = []
        for name, command, held in commands(config):
            print(f"{name}: {args.runs} runs", file=sys.stderr, flush=True)
            rows.append({**measure(name, command, args.runs), "goal_ms": GOAL_MS if held else None})
    print(render(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    missed = [r for r in rows if r["goal_ms"] is not None and r["median_ms"] > r["goal_ms"]]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
