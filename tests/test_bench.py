"""The benchmark's regression guard: bench/README.md shows the baseline it holds, and a
run that costs more than the tolerance is reported as a regression (exit 1).

The guard is driven as a developer drives it, by its command line, on results files
shaped like `bench/run.py --json` writes; one short real run checks that
`run.py --check` reads a baseline and fails against one it cannot meet. No timing is
asserted: the figures come from the files, or only their direction matters.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def guard_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_guard", BENCH / "guard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def baseline() -> dict[str, Any]:
    return dict(json.loads((BENCH / "baseline.json").read_text()))


def compare(tmp_path: Path, results: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": results}))
    return subprocess.run(
        [sys.executable, str(BENCH / "guard.py"), "--compare", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def changed(
    results: list[dict[str, Any]], mode: str, conc: int, *, cpu: float = 1.0, rps: float = 1.0
) -> list[dict[str, Any]]:
    """The results with chain429's run (mode, conc) using `cpu` x the CPU per request and
    answering at `rps` x the rate."""
    out = copy.deepcopy(results)
    for r in out:
        if (r["target"], r["mode"], r["concurrency"]) == ("chain429", mode, conc):
            r["rps"] *= rps
            r["server_cpu"] *= cpu * rps  # CPU share = CPU per request x rate
    return out


def test_the_readme_shows_the_baseline_it_was_drawn_from():
    guard = guard_module()
    text = (BENCH / "README.md").read_text()
    assert guard.table(baseline()) in text, (
        "bench/README.md's results block is stale: run python bench/guard.py --readme"
    )


def test_the_baseline_guards_cpu_per_request_and_ratios_for_every_run_it_holds():
    held = baseline()
    assert held["tolerance"] == pytest.approx(0.15)
    keys = {f"{r['mode']} c={r['concurrency']}" for r in held["results"]}
    assert set(held["metrics"]) == keys
    for figures in held["metrics"].values():
        assert {"cpu_ms_per_request", "cpu_vs_direct"} <= set(figures)
        assert all(value > 0 for value in figures.values())


def test_the_baselines_own_run_passes(tmp_path):
    result = compare(tmp_path, baseline()["results"])
    assert result.returncode == 0, result.stdout
    assert "REGRESSED" not in result.stdout
    assert "plain c=32    cpu_ms_per_request" in result.stdout


@pytest.mark.parametrize("mode", ["plain", "stream"])
def test_a_fifth_more_cpu_per_request_is_a_regression_a_tenth_is_not(tmp_path, mode):
    results = baseline()["results"]
    worse = compare(tmp_path, changed(results, mode, 32, cpu=1.2))
    assert worse.returncode == 1
    lines = [line for line in worse.stdout.splitlines() if "REGRESSED" in line]
    assert lines and all(line.split()[0] == mode for line in lines), worse.stdout
    assert any("cpu_ms_per_request" in line for line in lines)
    assert compare(tmp_path, changed(results, mode, 32, cpu=1.1)).returncode == 0


def test_a_lower_rate_than_direct_at_the_same_cpu_per_request_is_a_regression(tmp_path):
    results = baseline()["results"]
    slower = compare(tmp_path, changed(results, "plain", 32, rps=0.8))
    assert slower.returncode == 1
    regressed = [line for line in slower.stdout.splitlines() if "REGRESSED" in line]
    assert [line.split()[2] for line in regressed] == ["rps_vs_direct"], slower.stdout


def test_getting_cheaper_or_faster_is_never_a_regression(tmp_path):
    results = baseline()["results"]
    better = changed(results, "plain", 32, cpu=0.5, rps=1.5)
    better = changed(better, "stream", 1, cpu=0.5)
    result = compare(tmp_path, better)
    assert result.returncode == 0, result.stdout


def test_figures_measured_on_one_side_only_are_named_not_compared(tmp_path):
    plain_only = [r for r in baseline()["results"] if r["mode"] == "plain"]
    result = compare(tmp_path, plain_only)
    assert result.returncode == 0, result.stdout
    assert "not compared (in one side only): stream c=1 cpu_ms_per_request" in result.stdout


def test_run_check_fails_against_a_baseline_it_cannot_meet(tmp_path):
    """A short real run (fake, chain429, load generator) with --check against a baseline
    one hundred times cheaper than anything possible: exit 1, the figure named."""
    impossible = baseline()
    impossible["metrics"] = {"plain c=1": {"cpu_ms_per_request": 0.0001}}
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(impossible))
    short = ["--mode", "plain", "--concurrency", "1", "--seconds", "0.5", "--warmup", "0.2"]
    result = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), *short, "--check", "--baseline", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "plain c=1     cpu_ms_per_request" in result.stdout
    assert "REGRESSED" in result.stdout
