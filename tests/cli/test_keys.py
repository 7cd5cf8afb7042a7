"""The first hour with keys: `init` keeps what `.env` has and adds an admin key, `provider
add` starts a config from nothing, a local key-less provider is sent no key, and the CLI
finds the admin key in `.env` to change a running server, nothing exported.

In a scratch directory with an environment of its own, as a user has: the server as a
real process, the commands in-process (CliRunner) where that changes nothing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from chain429.config.loader import read_dotenv
from chain429.fakes.provider import FakeProvider
from fixtures.cli_edits import KEY_VARS
from fixtures.cli_edits import cli as in_process
from fixtures.processes import CHAIN429, free_port, run, stop, wait_healthy

HELLO = [{"role": "user", "content": "hi"}]


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """A user's environment: no provider or chain429 variables, config dirs of its own."""
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
    env = {k: v for k, v in env.items() if not k.startswith("CHAIN429_") and k != "CONFIG_PATH"}
    env.update(CHAIN429_CONFIG_DIR=str(home / "contexts"), XDG_CONFIG_HOME=str(home / "config"))
    return {**env, **extra}


def cli(directory: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*CHAIN429, *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=directory,
        env=user_env(directory.parent, **extra),
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_init_keeps_keys_in_dotenv_adds_an_admin_key_and_placeholders(tmp_path):
    home = tmp_path / "project"
    home.mkdir()
    dotenv = home / ".env"
    dotenv.write_text("CHAIN429_API_KEY=mine-already\n# GROQ_API_KEY=\nGEMINI_API_KEY=gm\n")
    result = cli(home, "init", "--yes", "-p", "groq", "-p", "gemini")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "mine-already\n"
    assert "kept the proxy key already in" in result.stderr and "shown only" not in result.stderr
    values = read_dotenv(dotenv)
    assert values["CHAIN429_API_KEY"] == "mine-already"
    admin = values["CHAIN429_ADMIN_KEY"]
    assert len(admin) >= 40 and admin not in result.stdout + result.stderr
    text = dotenv.read_text()
    for var in ("OPENROUTER_API_KEY", "CEREBRAS_API_KEY", "MISTRAL_API_KEY", "OPENAI_API_KEY"):
        assert text.count(f"\n# {var}=\n") == 1, var  # not picked: a placeholder
    assert text.count("# GROQ_API_KEY=") == 1 and "# GEMINI_API_KEY=" not in text
    config = (home / "chain429.yaml").read_text()
    assert '  adminKeys: ["${CHAIN429_ADMIN_KEY}"]' in config
    assert yaml.safe_load(config)["settings"]["adminKeys"] == ["${CHAIN429_ADMIN_KEY}"]
    again = cli(home, "init", "--yes", "--force", "-p", "groq")
    assert again.returncode == 0 and again.stdout == "mine-already\n"
    assert "kept the admin key" in again.stderr
    assert read_dotenv(dotenv) == values and dotenv.read_text() == text  # nothing added twice


def test_provider_add_starts_a_config_and_local_providers_get_no_key(tmp_path, monkeypatch):
    home = tmp_path / "project"
    home.mkdir()
    path = home / "chain429.yaml"
    monkeypatch.chdir(home)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no user config either

    def edit(*args: str) -> str:
        result = in_process(*args)
        assert result.exit_code == 0, result.output
        return result.stderr

    with FakeProvider("box") as box, FakeProvider("vllm") as vllm:
        first = edit("provider", "add", "box", "--type", "lmstudio", "--base-url", box.base_url)
        assert "created chain429.yaml as `chain429 init --yes` would" in first
        assert "added provider 'box' (lmstudio, no key)" in first
        keys = read_dotenv(home / ".env")
        assert {"CHAIN429_API_KEY", "CHAIN429_ADMIN_KEY"} <= keys.keys()
        assert "# GROQ_API_KEY=" in (home / ".env").read_text()
        vllm_url = vllm.base_url
        edit("provider", "add", "vllm", "-t", "generic-openai", "--base-url", vllm_url, "--no-key")
        edit("provider", "add", "ol", "--type", "ollama")
        both = in_process("provider", "add", "x", "-t", "groq", "--no-key", "--api-key-env", "K")
        assert both.exit_code == 2 and "--no-key" in both.stderr
        data = yaml.safe_load(path.read_text())
        assert data["settings"]["adminKeys"] == ["${CHAIN429_ADMIN_KEY}"]
        providers = {p["id"]: p for p in data["providers"]}
        assert not any("apiKey" in p for p in providers.values())
        assert providers["ol"] == {"id": "ol", "type": "ollama"}
        assert "http://127.0.0.1:11434/v1" in in_process("provider", "list").stdout  # its URL
        edit("chain", "add", "local", "-e", "box:m1", "-e", "vllm:m2")
        port = free_port()
        edit("settings", "set", "port", str(port))
        edit("chain", "default", "local")
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [*CHAIN429, "serve"],  # the proxy key comes from .env: nothing exported
            cwd=home,
            env=user_env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_healthy(url, proc)
            auth = {"authorization": f"Bearer {keys['CHAIN429_API_KEY']}"}
            chat = {"model": "local", "messages": HELLO}
            answer = httpx.post(f"{url}/v1/chat/completions", json=chat, headers=auth)
            assert answer.status_code == 200 and answer.headers["x-429chain-provider"] == "box/m1"
            # Changing a running server takes the admin key, which the CLI finds in .env.
            moved = edit("chain", "move", "local", "vllm:m2", "--to", "1")
            assert f"the server at {url} took the change" in moved
            answer = httpx.post(f"{url}/v1/chat/completions", json=chat, headers=auth)
            assert answer.headers["x-429chain-provider"] == "vllm/m2"
            assert "available" in in_process("status").stdout  # reads take it too
            with pytest.MonkeyPatch.context() as proxy_only:  # a proxy key changes nothing
                proxy_only.setenv("CHAIN429_ADMIN_KEY", keys["CHAIN429_API_KEY"])
                refused = in_process("reload")
                assert refused.exit_code == 2 and ".env beside the config" in refused.stderr
        finally:
            stop(proc)
    assert box.requests and vllm.requests
    for request in [*box.requests, *vllm.requests]:
        assert "authorization" not in request.headers
    assert run("validate", "-c", str(path), env=user_env(tmp_path)).stdout == "ok\n"
