"""`chain429 alias add|list|remove`: the file they write, what they refuse, and a chain an
alias names that `chain remove` keeps. In-process (typer's runner), reading the file back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from fixtures.cli_edits import assert_comments_kept, cli, commented


def aliased(tmp_path: Path) -> Path:
    path = commented(tmp_path)
    with path.open("a") as file:
        file.write("  - name: spare\n    entries:\n      - provider: groq\n        model: other\n")
    return path


def aliases(path: Path) -> dict[str, str]:
    return yaml.safe_load(path.read_text()).get("aliases") or {}


def test_alias_add_list_and_remove_keep_the_files_notes(tmp_path):
    path = aliased(tmp_path)
    added = cli("alias", "add", "gpt-4o-mini", "main", "-c", str(path))
    assert added.exit_code == 0, added.output
    assert "added alias 'gpt-4o-mini' -> chain 'main'" in added.output
    cli("alias", "add", "openai/gpt-4o", "spare", "-c", str(path))
    assert aliases(path) == {"gpt-4o-mini": "main", "openai/gpt-4o": "spare"}
    assert_comments_kept(path)

    listed = cli("alias", "list", "-c", str(path))
    assert listed.stdout.splitlines() == [
        "ALIAS\tCHAIN",
        "gpt-4o-mini\tmain",
        "openai/gpt-4o\tspare",
    ]
    as_json = json.loads(cli("alias", "list", "-c", str(path), "--json").stdout)
    assert as_json == [
        {"alias": "gpt-4o-mini", "chain": "main"},
        {"alias": "openai/gpt-4o", "chain": "spare"},
    ]

    moved = cli("alias", "add", "gpt-4o-mini", "spare", "-c", str(path))
    assert "pointed alias 'gpt-4o-mini' -> chain 'spare'" in moved.output
    same = cli("alias", "add", "gpt-4o-mini", "spare", "-c", str(path))
    assert same.exit_code == 0 and "nothing to change" in same.output

    removed = cli("alias", "remove", "gpt-4o-mini", "-c", str(path))
    assert removed.exit_code == 0, removed.output
    assert aliases(path) == {"openai/gpt-4o": "spare"}
    assert_comments_kept(path)


def test_alias_add_refuses_a_missing_chain_and_a_chains_name(tmp_path):
    path = aliased(tmp_path)
    before = path.read_text()
    missing = cli("alias", "add", "gpt-4o-mini", "mian", "-c", str(path))
    assert missing.exit_code == 2
    assert "no chain named 'mian'" in missing.output
    clash = cli("alias", "add", "spare", "main", "-c", str(path))
    assert clash.exit_code == 2
    assert "'spare' is a chain's name already" in clash.output
    unknown = cli("alias", "remove", "nope", "-c", str(path))
    assert unknown.exit_code == 2 and "no alias 'nope'" in unknown.output
    assert path.read_text() == before


def test_a_chain_an_alias_names_is_not_removed(tmp_path):
    path = aliased(tmp_path)
    cli("alias", "add", "gpt-4o-mini", "spare", "-c", str(path))
    refused = cli("chain", "remove", "spare", "-c", str(path))
    assert refused.exit_code == 2
    assert "chain 'spare' would be removed, and aliases name it: gpt-4o-mini" in refused.output
    # Nor a provider whose removal would empty it.
    solo = ("--type", "groq", "--api-key-env", "SOLO_API_KEY")
    cli("provider", "add", "solo", *solo, "-c", str(path))
    cli("chain", "add", "only-solo", "--entry", "solo:m", "-c", str(path))
    cli("alias", "add", "claude-3-haiku", "only-solo", "-c", str(path))
    cascade = cli("provider", "remove", "solo", "--cascade", "-c", str(path))
    assert cascade.exit_code == 2
    assert "chain 'only-solo' would be left empty" in cascade.output
    assert "aliases name it: claude-3-haiku" in cascade.output
    cli("alias", "remove", "gpt-4o-mini", "-c", str(path))
    assert cli("chain", "remove", "spare", "-c", str(path)).exit_code == 0


def test_logs_shows_the_alias_a_request_asked_for(fake, proxy, tmp_path):
    from chain429.requestlog.database import migrate, open_database
    from chain429.requestlog.writer import Telemetry
    from fixtures.servers import chain_config, provider_entry

    a = fake("a")
    database = open_database(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(database)
    config = chain_config([provider_entry("a", a)], [("a", "m")], chain="fast")
    p = proxy(
        {**config, "aliases": {"gpt-4o-mini": "fast"}},
        telemetry=Telemetry(database, batch_interval_s=0.01),
    )
    reply = p.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    request_id = reply.headers["x-request-id"]
    env = {"CHAIN429_ADMIN_KEY": p.api_key or ""}
    deadline = time.monotonic() + 5
    while (shown := cli("logs", request_id, "--server", p.url, env=env)).exit_code != 0:
        assert time.monotonic() < deadline, shown.output
        time.sleep(0.05)
    assert f"{request_id} at " in shown.stdout
    assert ": chat, chain fast (alias gpt-4o-mini) -> a/m, 200 success" in shown.stdout
