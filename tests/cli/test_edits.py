"""Every ordinary edit from the command line: one chain entry, the default chain, a
provider with its entries, one setting; and the comments stay with what they describe.

In-process through typer's CliRunner (see test_config_commands), reading back the
file each command wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from fixtures.cli_edits import assert_comments_kept, cli, commented

NOTED = """\
# My config
version: 1
settings:
  apiKeys: [k]
  defaultChain: main
providers:
  - id: groq
    type: groq
    apiKey: ${GROQ_API_KEY}
  - id: openai
    type: openai
    apiKey: ${OPENAI_API_KEY}
chains:
  # The main chain
  - name: main
    entries:
      # free first
      - provider: groq
        model: llama-3.1-8b-instant
      # paid fallback
      - provider: openai
        model: gpt-4o-mini
  # Backup: paid only
  - name: backup
    entries:
      - provider: openai
        model: gpt-4o-mini
# The end
"""


def noted(tmp_path: Path) -> Path:
    path = tmp_path / "chain429.yaml"
    path.write_text(NOTED)
    return path


def entries(path: Path, chain: str) -> list[str]:
    shown = json.loads(cli("chain", "show", chain, "-c", str(path), "--json").stdout)
    return [f"{e['provider']}:{e['model']}" for e in shown["entries"]]


def settings(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["settings"]


def test_chain_add_on_an_existing_chain_says_how_to_change_it(tmp_path):
    path = commented(tmp_path)
    before = path.read_text()
    result = cli("chain", "add", "main", "-e", "groq:m", "-c", str(path))
    assert result.exit_code == 2 and path.read_text() == before
    assert result.stderr.startswith("error: chain 'main' already exists")
    assert "chain429 chain entry add|remove main PROVIDER:MODEL" in result.stderr
    assert "chain429 chain move main" in result.stderr
    one = cli("chain", "add", "solo", "-e", "groq:m", "-c", str(path))
    assert "added chain 'solo' (1 entry)" in one.stderr  # not "1 entries"


def test_chain_entry_add_and_remove_edit_one_entry(tmp_path):
    path = commented(tmp_path)
    added = cli("chain", "entry", "add", "main", "local:first", "--at", "1", "-c", str(path))
    assert added.exit_code == 0, added.output
    assert "added local:first to chain 'main' at position 1" in added.stderr
    cli("chain", "entry", "add", "main", "groq:or/x:free", "-c", str(path))  # last
    assert entries(path, "main") == [
        "local:first",
        "groq:llama-3.1-8b-instant",
        "local:m",
        "groq:or/x:free",
    ]
    before = path.read_text()
    refused = {
        "already, at position 1": ["add", "main", "local:first"],
        "no provider with id 'nope'": ["add", "main", "nope:m"],
        "takes positions 1 to 5": ["add", "main", "groq:z", "--at", "6"],
        "has no entry groq:zz": ["remove", "main", "groq:zz"],
        "entry 1 of chain 'main' is not local:m": ["remove", "main", "local:m", "--at", "1"],
        "no chain named 'nope'": ["remove", "nope", "groq:m"],
    }
    for message, args in refused.items():
        result = cli("chain", "entry", *args, "-c", str(path))
        assert result.exit_code == 2 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert path.read_text() == before
    removed = cli("chain", "entry", "remove", "main", "local:first", "-c", str(path))
    assert removed.exit_code == 0 and "(position 1)" in removed.stderr
    assert entries(path, "main") == ["groq:llama-3.1-8b-instant", "local:m", "groq:or/x:free"]
    cli("chain", "add", "one", "-e", "groq:m", "-c", str(path))
    only = cli("chain", "entry", "remove", "one", "groq:m", "-c", str(path))
    assert only.exit_code == 2 and "chain429 chain remove one" in only.stderr
    assert_comments_kept(path)


def test_entry_comments_go_and_move_with_their_entry(tmp_path):
    path = noted(tmp_path)
    moved = cli("chain", "move", "main", "openai:gpt-4o-mini", "--to", "1", "-c", str(path))
    assert moved.exit_code == 0, moved.output
    text = path.read_text()
    assert (
        text.index("# paid fallback")
        < text.index("- provider: openai")
        < text.index("# free first")
        < text.index("- provider: groq")
    )
    removed = cli("chain", "entry", "remove", "main", "openai:gpt-4o-mini", "-c", str(path))
    assert removed.exit_code == 0, removed.output
    text = path.read_text()
    assert "# paid fallback" not in text and "# free first" in text
    cli("chain", "entry", "add", "main", "openai:gpt-4o", "--at", "1", "-c", str(path))
    text = path.read_text()  # a new entry goes above "# free first", not under it
    assert text.index("- provider: openai") < text.index("# free first")


def test_removing_a_chain_or_provider_takes_the_comment_above_it(tmp_path):
    path = noted(tmp_path)
    result = cli("chain", "remove", "backup", "-c", str(path))
    assert result.exit_code == 0, result.output
    text = path.read_text()
    assert "# Backup: paid only" not in text and "backup" not in text
    for note in ("# My config", "# The main chain", "# free first", "# paid fallback", "# The end"):
        assert note in text, note


def test_chain_default_sets_default_chain(tmp_path):
    path = commented(tmp_path)
    cli("chain", "add", "other", "-e", "groq:x", "-c", str(path))
    result = cli("chain", "default", "other", "-c", str(path))
    assert result.exit_code == 0, result.output
    assert settings(path)["defaultChain"] == "other"
    listed = json.loads(cli("chain", "list", "-c", str(path), "--json").stdout)
    assert [c["name"] for c in listed if c["default"]] == ["other"]
    again = cli("chain", "default", "other", "-c", str(path))
    assert again.exit_code == 0 and "already" in again.stderr
    missing = cli("chain", "default", "nope", "-c", str(path))
    assert missing.exit_code == 2 and "chains: main, other" in missing.stderr
    assert cli("chain", "remove", "main", "-c", str(path)).exit_code == 0  # no longer the default
    assert_comments_kept(path)


def test_provider_remove_cascade_takes_its_entries_and_says_which_chains_emptied(tmp_path):
    path = commented(tmp_path)
    cli("chain", "add", "locals", "-e", "local:a", "-e", "local:b", "-c", str(path))
    plain = cli("provider", "remove", "local", "-c", str(path))
    assert plain.exit_code == 2 and "--cascade" in plain.stderr
    result = cli("provider", "remove", "local", "--cascade", "-c", str(path))
    assert result.exit_code == 0, result.output
    assert "removed provider 'local' and its 3 chain entries" in result.stderr
    assert "left empty, so removed too: 1 chain (locals)" in result.stderr
    data = yaml.safe_load(path.read_text())
    assert [p["id"] for p in data["providers"]] == ["groq"]
    assert [c["name"] for c in data["chains"]] == ["main"]
    assert entries(path, "main") == ["groq:llama-3.1-8b-instant"]
    before = path.read_text()
    refused = cli("provider", "remove", "groq", "--cascade", "-c", str(path))
    assert refused.exit_code == 2 and "default chain 'main' would be left empty" in refused.stderr
    assert path.read_text() == before
    for note in ("# My chain429 config", "# the proxy key", "# fast and free", "# The default"):
        assert note in before, note  # "# never shown" went with local's apiKey line


def test_settings_set_validates_before_writing_and_get_reads(tmp_path):
    path = commented(tmp_path)
    default = cli("settings", "get", "cooldownDefaultMs", "-c", str(path))
    assert (default.exit_code, default.stdout) == (0, "60000\n")
    assert "that is its default" in default.stderr
    for key, value, expected in [
        ("cooldownDefaultMs", "1000", 1000),
        ("cooldown_default_ms", "2000", 2000),  # the snake_case spelling works too
        ("queueMode", "true", True),
        ("allowedHosts", "proxy.example", ["proxy.example"]),
        (
            "corsOrigins",
            "https://a.example,https://b.example",
            ["https://a.example", "https://b.example"],
        ),
        ("adminKeys", "[${ADMIN_A}, ${ADMIN_B}]", ["${ADMIN_A}", "${ADMIN_B}"]),
        ("logLevel", "debug", "debug"),
    ]:
        result = cli("settings", "set", key, value, "-c", str(path))
        assert result.exit_code == 0, (key, result.output)
        name = "cooldownDefaultMs" if key == "cooldown_default_ms" else key
        assert settings(path)[name] == expected
    assert cli("settings", "get", "queueMode", "-c", str(path)).stdout == "true\n"
    restart = cli("settings", "set", "logLevel", "warn", "-c", str(path))
    assert "takes logLevel when it restarts" in restart.stderr
    before = path.read_text()
    for args, message in [
        (["port", "70000"], "settings.port"),
        (["queueMode", "maybe"], "settings.queueMode"),
        (["cooldownMs", "1"], "no setting named 'cooldownMs'; did you mean cooldownDefaultMs?"),
    ]:
        result = cli("settings", "set", *args, "-c", str(path))
        assert result.exit_code == 2 and message in result.stderr, (args, result.stderr)
    assert path.read_text() == before
    cleared = cli("settings", "set", "cooldownDefaultMs", "null", "-c", str(path))
    assert cleared.exit_code == 0 and "cooldownDefaultMs" not in settings(path)
    secret = cli("settings", "set", "apiKeys", "sk-proxy-literal-123456", "-c", str(path))
    assert secret.exit_code == 0 and "written in clear" in secret.stderr
    assert "sk-proxy-literal-123456" not in secret.stderr
    shown = cli("settings", "get", "-c", str(path))
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in shown.stdout.splitlines()}
    assert rows["KEY"] == ["VALUE", "SOURCE"] and rows["queueMode"] == ["true", "file"]
    assert rows["maxConnections"] == ["1024", "default"] and rows["dbPath"] == ["-", "default"]
    assert "sk-proxy-literal-123456" not in shown.stdout and "None" not in shown.stdout
    assert json.loads(cli("settings", "get", "--json", "-c", str(path)).stdout)["port"] > 0
    assert_comments_kept(path)
