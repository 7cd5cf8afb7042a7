"""The wheel a user installs: only `chain429` in it, and a working `chain429` command."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_holds_only_chain429_and_installs_a_working_command(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("chain429-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"chain429"}
    for expected in (
        "chain429/server.py",
        "chain429/cli/main.py",
        "chain429/web/__init__.py",
        "chain429/web/static/index.html",
    ):
        assert expected in names
    assert not any(name.startswith(("tests/", "bench/", "cli/", "web/")) for name in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    result = subprocess.run(
        [str(venv / "bin" / "chain429"), "--version"], capture_output=True, text=True, timeout=60
    )
    from chain429 import __version__

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"chain429 {__version__}"
