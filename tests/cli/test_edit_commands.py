"""`chain429 chain default|set` and `chain429 provider set`, run as a user runs them:
the file changes as asked, keeps its comments, and refuses what the writer refuses."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fixtures.processes import free_port, run

CONFIG = """\
# edit commands: keep this note
version: 1
settings:
  port: {port}   # nothing listens here
  defaultChain: main
providers:
  - id: a          # the first provider
    type: groq
    apiKey: ${{GROQ_API_KEY}}
  - id: b
    type: generic-openai
    baseUrl: http://127.0.0.1:9/v1
    apiKey: ${{B_API_KEY}}
chains:
  - name: main
    entries:
      - provider: a
        model: m1
        paid: true     # this entry's own setting
      - provider: b
        model: m2
  - name: other
    entries:
      - provider: b
        model: m2
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "chain429.yaml"
    path.write_text(CONFIG.format(port=free_port()))
    return path


def cli(*args: str):
    env = {k: "" for k in ("CHAIN429_SERVER", "CHAIN429_ADMIN_KEY") if k in os.environ}
    return run(*args, env={**env, "GROQ_API_KEY": "g", "B_API_KEY": "b", "C_API_KEY": "c"})


def test_chain_default_changes_the_default_chain(config):
    done = cli("chain", "default", "other", "-c", str(config))
    assert done.returncode == 0, done.stderr
    assert "made chain 'other' the default" in done.stderr
    text = config.read_text()
    assert "defaultChain: other" in text and "# nothing listens here" in text
    missing = cli("chain", "default", "nope", "-c", str(config))
    assert missing.returncode == 2 and "no chain named 'nope'" in missing.stderr


def test_chain_set_gives_a_chain_its_new_entries_keeping_their_settings(config):
    done = cli("chain", "set", "main", "-e", "b:m2", "-e", "a:m1", "-e", "a:m3", "-c", str(config))
    assert done.returncode == 0, done.stderr
    listed = cli("chain", "show", "main", "--json", "-c", str(config))
    entries = json.loads(listed.stdout)["entries"]
    assert [(e["provider"], e["model"]) for e in entries] == [("b", "m2"), ("a", "m1"), ("a", "m3")]
    assert [e["paid"] for e in entries] == [False, True, False]
    text = config.read_text()
    assert "# this entry's own setting" in text and "# the first provider" in text
    unknown = cli("chain", "set", "main", "-e", "zz:m", "-c", str(config))
    assert unknown.returncode == 2 and "zz" in unknown.stderr
    assert "zz" not in config.read_text()


def test_provider_set_changes_fields_and_keeps_the_key(config):
    done = cli(
        "provider", "set", "a", "--name", "Groq", "--timeout", "5000", "--paid", "-c", str(config)
    )
    assert done.returncode == 0, done.stderr
    shown = cli("provider", "show", "a", "--json", "-c", str(config))
    provider = json.loads(shown.stdout)["provider"]
    assert provider["name"] == "Groq" and provider["timeout"] == 5000 and provider["paid"] is True
    assert provider["apiKey"] == "${GROQ_API_KEY}"
    assert "# the first provider" in config.read_text()


def test_provider_set_to_another_address_needs_the_key_again(config):
    moved = cli("provider", "set", "b", "--base-url", "http://127.0.0.1:10/v1", "-c", str(config))
    assert moved.returncode == 2 and "give the key again" in moved.stderr
    assert "127.0.0.1:10" not in config.read_text()
    again = cli(
        "provider", "set", "b", "--base-url", "http://127.0.0.1:10/v1",
        "--api-key-env", "C_API_KEY", "-c", str(config),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "apiKey: ${C_API_KEY}" in config.read_text()
    nothing = cli("provider", "set", "b", "-c", str(config))
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr
