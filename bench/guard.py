"""The regression guard: a run's ratios against the checked-in bench/baseline.json.

    python bench/run.py --check                    # measure, then compare (exit 1 on a regression)
    python bench/run.py --seconds 5 --write-baseline   # measure, make this run the baseline
    python bench/guard.py --compare results.json   # compare a saved `run.py --json` file
    python bench/guard.py --readme                 # redraw bench/README.md's table from the JSON

Absolute requests/s say as much about the machine (and who else uses it) as
about chain429, so the guard compares figures where the machine cancels out or
moves least, each per mode and concurrency:

- `rps_vs_direct`: chain429's requests/s over the fake's own, measured the same
  minute on the same machine (higher is better). At c=1 the direct rate swings
  with how the scheduler places two ping-ponging processes (README), so it is
  kept at the top concurrency only.
- `cpu_ms_per_request`: chain429's CPU time per answered request (lower is
  better): what sets requests/s per core, and the least noisy figure on a
  shared machine. It still scales with the CPU's speed: refresh the baseline
  when the machine changes.
- `cpu_vs_direct`: that CPU time over the fake's (lower is better): the same,
  with the machine's speed divided out.

A run regresses when one figure is worse than the baseline's by more than
`tolerance` (15%). Figures in only one of the two (another mode or
concurrency) are listed and skipped. The baseline also keeps the whole run it
came from, and bench/README.md's results table is drawn from it (`--readme`;
tests/test_bench.py fails when they differ), so the numbers people read are the
numbers the guard holds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # report's tables, when run as a script
from report import added, goal_lines, goals, render  # noqa: E402

BASELINE = BENCH / "baseline.json"
README = BENCH / "README.md"
TOLERANCE = 0.15
HIGHER_IS_BETTER = {"rps_vs_direct": True, "cpu_ms_per_request": False, "cpu_vs_direct": False}
START = "<!-- generated from bench/baseline.json by `python bench/guard.py --readme` -->"
END = "<!-- end generated -->"

Result = dict[str, Any]


def _cpu_ms(result: Result) -> float:
    """CPU ms the server spent per answered request in the measured window."""
    share, rps = result.get("server_cpu", math.nan), result.get("rps", 0.0)
    return share / rps * 1000 if rps else math.nan


def metrics(results: list[Result]) -> dict[str, dict[str, float]]:
    """The guarded figures of one run, keyed `"plain c=32"`."""
    by_key = {(r["mode"], r["target"], r["concurrency"]): r for r in results}
    out: dict[str, dict[str, float]] = {}
    for (mode, target, conc), proxied in sorted(by_key.items()):
        direct = by_key.get((mode, "direct", conc))
        if target != "chain429" or direct is None:
            continue
        top = conc == max(c for m, _, c in by_key if m == mode)
        row = {"cpu_ms_per_request": _cpu_ms(proxied)}
        row["cpu_vs_direct"] = row["cpu_ms_per_request"] / _cpu_ms(direct)
        if top and conc > 1:
            row["rps_vs_direct"] = proxied["rps"] / direct["rps"]
        out[f"{mode} c={conc}"] = {k: v for k, v in row.items() if math.isfinite(v)}
    return out


def compare(
    baseline: dict[str, dict[str, float]],
    current: dict[str, dict[str, float]],
    tolerance: float = TOLERANCE,
) -> list[Result]:
    """One row per figure in both: baseline, now, the change (+ = worse), regressed or not."""
    rows = []
    for key, figures in baseline.items():
        for name, before in figures.items():
            now = current.get(key, {}).get(name)
            if now is None or not before:
                continue
            change = now / before - 1
            worse = -change if HIGHER_IS_BETTER[name] else change
            rows.append(
                {
                    "key": key,
                    "metric": name,
                    "baseline": before,
                    "now": now,
                    "worse_by": worse,
                    "regressed": worse > tolerance,
                }
            )
    return rows


def missing(baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Figures only one side has (another mode or concurrency was measured)."""

    def names(side: dict[str, Any]) -> set[str]:
        return {f"{key} {name}" for key, figures in side.items() for name in figures}

    return sorted(names(baseline) ^ names(current))


def render_comparison(rows: list[Result], skipped: Sequence[str], tolerance: float) -> str:
    lines = [
        f"against bench/baseline.json (a figure regresses when it is more than "
        f"{tolerance:.0%} worse):",
        f"  {'run':<14}{'figure':<20}{'baseline':>10}{'now':>10}{'worse by':>10}",
    ]
    for row in rows:
        lines.append(
            f"  {row['key']:<14}{row['metric']:<20}{row['baseline']:>10.3f}{row['now']:>10.3f}"
            f"{row['worse_by']:>+10.1%}  {'REGRESSED' if row['regressed'] else 'ok'}"
        )
    if skipped:
        lines.append(f"  not compared (in one side only): {', '.join(skipped)}")
    return "\n".join(lines)


def check(results: list[Result], path: Path = BASELINE) -> tuple[bool, str]:
    """(no regression, the report) for one run's results against the baseline file."""
    baseline = json.loads(path.read_text())
    tolerance = float(baseline.get("tolerance", TOLERANCE))
    current = metrics(results)
    rows = compare(baseline["metrics"], current, tolerance)
    text = render_comparison(rows, missing(baseline["metrics"], current), tolerance)
    return not any(row["regressed"] for row in rows), text


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def baseline_document(results: list[Result], seconds: float, note: str = "") -> dict[str, Any]:
    return {
        "about": "bench/run.py's guard figures and the run they came from. Refresh on a quiet "
        "machine with `python bench/run.py --seconds 5 --write-baseline` (bench/README.md).",
        "measured": {
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "commit": _commit(),
            "seconds_per_run": seconds,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}",
            "note": note,
        },
        "tolerance": TOLERANCE,
        "metrics": metrics(results),
        "results": results,
    }


def write_baseline(results: list[Result], seconds: float, note: str = "") -> None:
    """Make this run the baseline, and redraw the README's table from it."""
    BASELINE.write_text(json.dumps(baseline_document(results, seconds, note), indent=2) + "\n")
    README.write_text(readme_with_table(README.read_text(), json.loads(BASELINE.read_text())))


def table(document: dict[str, Any]) -> str:
    """What bench/README.md shows of a baseline: when and where, the run's tables, the
    goals, and the guarded figures."""
    measured, results = document["measured"], document["results"]
    concurrencies = sorted({r["concurrency"] for r in results})
    extra = added(results, concurrencies)
    head = (
        f"`bench/run.py`, {measured['date']}, commit {measured['commit']}, "
        f"{measured['machine']}, {measured['seconds_per_run']:g} s per run"
    )
    if measured.get("note"):
        head += f". {measured['note']}"
    guarded = [f"{'run':<14}{'figure':<20}{'baseline':>10}"]
    for key, figures in document["metrics"].items():
        guarded += [f"{key:<14}{name:<20}{value:>10.3f}" for name, value in figures.items()]
    return "\n".join(
        [
            START,
            head,
            "",
            "```",
            render(results, extra),
            "",
            *goal_lines(goals(extra)),
            "```",
            "",
            f"Guarded figures (`--check` fails when one is {document['tolerance']:.0%} worse):",
            "",
            "```",
            *guarded,
            "```",
            END,
        ]
    )


def readme_with_table(text: str, document: dict[str, Any]) -> str:
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{README} has no block between {START!r} and {END!r}")
    return pattern.sub(lambda _: table(document), text, count=1)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Compare benchmark runs with bench/baseline.json.")
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--compare", metavar="RESULTS", help="a `run.py --json` file to check")
    group.add_argument("--readme", action="store_true", help="redraw bench/README.md's table")
    ap.add_argument("--baseline", default=str(BASELINE), help="default: bench/baseline.json")
    args = ap.parse_args(argv)
    if args.readme:
        README.write_text(readme_with_table(README.read_text(), json.loads(BASELINE.read_text())))
        print(f"redrew {README} from {BASELINE}", file=sys.stderr)
        return 0
    results = json.loads(Path(args.compare).read_text())["results"]
    ok, text = check(results, Path(args.baseline))
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
