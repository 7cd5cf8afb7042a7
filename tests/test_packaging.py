"""The wheel a user installs: only `chain429` in it, and a working `chain429` command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
STATIC = REPO / "web" / "static"


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
        "chain429/server/app.py",
        "chain429/cli/main.py",
        "chain429/web/__init__.py",
        "chain429/web/static/index.html",
    ):
        assert expected in names
    # Every file of the web UI, subfolders included.
    shipped = {n.removeprefix("chain429/web/static/") for n in names if "/web/static/" in n}
    on_disk = {str(f.relative_to(STATIC)) for f in STATIC.rglob("*") if f.is_file()}
    assert shipped == on_disk
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
    _serves_the_ui(venv, tmp_path)


def _serves_the_ui(venv: Path, tmp_path: Path) -> None:
    """The installed `chain429 serve` hands out the web UI from the installed package."""
    config = tmp_path / "c.yaml"
    config.write_text("version: 1\n")
    port = free_port()
    server = subprocess.Popen(
        [str(venv / "bin" / "chain429"), "serve", "-c", str(config), "--port", str(port)],
        cwd=tmp_path,
        env={**os.environ, "CHAIN429_HOME": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                first = httpx.get(f"{url}/", timeout=2)
                break
            except httpx.HTTPError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "chain429 serve did not answer"
                time.sleep(0.2)
        assert (first.status_code, first.headers["location"]) == (302, "/ui/")
        for name in ("index.html", "js/app.js", "js/pages/chains.js", "app.css"):
            answer = httpx.get(f"{url}/ui/{name}", timeout=5)
            assert answer.status_code == 200, name
            assert answer.content == (STATIC / name).read_bytes()
    finally:
        server.terminate()
        server.wait(timeout=15)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
