"""`chain429 --version`, `--help` and `validate` start without the server's libraries.

What a command imports is what its start-up costs (issue 15: at most 0.25 s; the
time itself is measured by bench/cli_startup.py, not here). Each command runs as a
user runs it, in a fresh process, under `python -X importtime`, which lists every
module the process imported; the test reads that list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.processes import CHAIN429

# The proxy's own stack: the HTTP server and client, the request log's database
# layer, metrics, the prompts. No command below needs any of it.
SERVER_STACK = {
    "sanic",
    "aiohttp",
    "uvloop",
    "httpx",
    "httpcore",
    "peewee",
    "psycopg",
    "prometheus_client",
    "questionary",
    "prompt_toolkit",
    "chain429.server.app",
    "chain429.routing",
    "chain429.requestlog",
}
# The config model (pydantic) and YAML: what `validate` needs and the other two do not.
CONFIG_MODEL = {"pydantic", "yaml", "chain429.config"}
# rich draws help; nothing else of these three draws anything.
RICH = {"rich"}
# All of the CLI that `--version` and main's own commands (validate) load: they run
# without declaring the other commands at all (cli/main.py, `run`).
MAINS_OWN = {"chain429.cli", "chain429.cli.main", "chain429.cli.output", "chain429.cli.options"}
# typer's help renderer imports these and never uses them for us (cli/output.py).
UNUSED_BY_HELP = {"rich.markdown", "rich.traceback", "markdown_it", "pygments"}

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


def run_cli(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """`chain429 ARGS` in a fresh process, and every module it imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAIN429_")}
    env["CHAIN429_CONFIG_DIR"] = str(tmp_path / "contexts")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *CHAIN429[1:], *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "typer" in modules  # the listing is there: an empty one would pass anything
    return result, modules


def imported_by(tmp_path: Path, *args: str) -> tuple[str, set[str]]:
    """(stdout, modules imported) of a `chain429 ARGS` that succeeds."""
    result, modules = run_cli(tmp_path, *args)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, modules


def loaded(modules: set[str], packages: set[str]) -> set[str]:
    """The modules of `packages` (a package or any module under it) that were imported."""
    return {m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)}


def test_version_imports_neither_the_server_nor_the_config_model_nor_rich(tmp_path):
    out, modules = imported_by(tmp_path, "--version")
    assert out.startswith("chain429 ")
    assert loaded(modules, SERVER_STACK | CONFIG_MODEL | RICH) == set()
    assert loaded(modules, {"chain429.cli"}) <= MAINS_OWN


def test_help_draws_with_rich_but_imports_neither_the_server_nor_the_config_model(tmp_path):
    out, modules = imported_by(tmp_path, "--help")
    assert "validate" in out and "provider" in out and "Usage" in out
    assert loaded(modules, SERVER_STACK | CONFIG_MODEL | UNUSED_BY_HELP) == set()
    assert loaded(modules, RICH)  # help is still rich's boxes (docs/cli.md pins them)


@pytest.mark.parametrize("as_json", [False, True])
def test_validate_imports_the_config_model_but_not_the_server_or_rich(tmp_path, as_json):
    path = tmp_path / "chain429.yaml"
    path.write_text(CONFIG)
    out, modules = imported_by(tmp_path, "validate", str(path), *(["--json"] if as_json else []))
    expected = {"valid": True, "file": str(path)} if as_json else None
    assert (json.loads(out) if as_json else out.strip()) == (expected or "ok")
    assert loaded(modules, SERVER_STACK | RICH) == set()
    assert loaded(modules, {"chain429.cli"}) <= MAINS_OWN
    assert "pydantic" in modules


def test_validate_of_a_bad_file_reports_it_without_the_server_or_rich(tmp_path):
    path = tmp_path / "chain429.yaml"
    path.write_text(CONFIG.replace("version: 1\n", ""))
    result, modules = run_cli(tmp_path, "validate", str(path))
    assert result.returncode == 1
    assert "missing required key 'version'" in result.stdout
    assert loaded(modules, SERVER_STACK | RICH) == set()
