"""`chain429 client ...` and `stats --by client`, run against real files and a real server.

What a user sees: the key printed once and kept in `.env` (mode 600, other
lines kept), the config holding only `${VAR}`, keys never listed, and a
running server taking a new or rotated key at once.
"""

from __future__ import annotations

import json
import re
import stat
import time
from pathlib import Path

import httpx
import pytest

from chain429.config.loader import load_config, read_dotenv
from chain429.requestlog.database import migrate, open_database
from chain429.requestlog.writer import Telemetry
from chain429.server.app import create_app
from chain429.server.serving import ServerThread
from fixtures.cli_edits import cli

ADMIN_KEY = "cli-admin-key-0123456789"
HELLO = [{"role": "user", "content": "hi"}]
KEY = re.compile(r"^c429-[A-Za-z0-9_-]{43}$")

CONFIG = """\
# the team's proxy: keep this note
version: 1
settings:
  port: 9                     # nothing listens here
  adminKeys: ['${{CHAIN429_ADMIN_KEY}}']
  defaultChain: main
providers:
  - id: a
    type: generic-openai
    baseUrl: {url}
chains:
  - name: main
    entries:
      - provider: a
        model: m
  - name: cheap
    entries:
      - provider: a
        model: small
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "chain429.yaml"
    path.write_text(CONFIG.format(url="http://127.0.0.1:9/v1"))
    (tmp_path / ".env").write_text(f"# mine\nCHAIN429_ADMIN_KEY={ADMIN_KEY}\nOTHER=1\n")
    return path


def add(config: Path, name: str, *options: str):
    return cli("client", "add", name, *options, "-c", str(config))


def test_add_keeps_the_key_in_env_and_prints_it_once(config):
    done = add(config, "alice", "--chains", "cheap", "--rpm", "10", "--tpd", "5000")
    assert done.exit_code == 0, done.output
    key = done.stdout.strip()
    assert KEY.match(key)
    assert "this is the only time the key is shown" in done.stderr
    dotenv = config.parent / ".env"
    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600
    text = dotenv.read_text()
    assert text.startswith(f"# mine\nCHAIN429_ADMIN_KEY={ADMIN_KEY}\nOTHER=1\n")
    assert read_dotenv(dotenv)["CHAIN429_CLIENT_ALICE_KEY"] == key
    written = config.read_text()
    assert "# the team's proxy: keep this note" in written and key not in written
    loaded = load_config(config)
    (alice,) = loaded.clients
    assert (alice.name, alice.key, alice.chains) == ("alice", key, ("cheap",))
    assert (alice.requests_per_minute, alice.tokens_per_day) == (10, 5000)
    assert "key: ${CHAIN429_CLIENT_ALICE_KEY}" in written


def test_list_and_show_never_print_a_key(config):
    key = add(config, "alice", "--rpm", "10").stdout.strip()
    add(config, "bob")
    listed = cli("client", "list", "-c", str(config), "--json")
    assert listed.exit_code == 0 and key not in listed.output
    rows = json.loads(listed.stdout)
    assert [(r["name"], r["key"]) for r in rows] == [
        ("alice", "${CHAIN429_CLIENT_ALICE_KEY}"),
        ("bob", "${CHAIN429_CLIENT_BOB_KEY}"),
    ]
    table = cli("client", "list", "-c", str(config))
    assert "alice" in table.stdout and "bob" in table.stdout and key not in table.output
    shown = cli("client", "show", "alice", "-c", str(config), "--json")
    assert shown.exit_code == 0 and key not in shown.output
    body = json.loads(shown.stdout)
    assert body["requestsPerMinute"] == 10 and body["usage"] is None  # no server runs
    missing = cli("client", "show", "carol", "-c", str(config))
    assert missing.exit_code == 2 and "no client named 'carol'" in missing.stderr


def test_set_changes_limits_and_chains_and_keeps_the_key(config):
    key = add(config, "alice", "--chains", "cheap", "--rpm", "10").stdout.strip()
    done = cli(
        "client", "set", "alice", "--rpm", "0", "--rpd", "99", "--all-chains", "-c", str(config)
    )
    assert done.exit_code == 0, done.output
    (alice,) = load_config(config).clients
    assert (alice.key, alice.chains, alice.requests_per_minute, alice.requests_per_day) == (
        key,
        None,
        None,
        99,
    )


def test_what_the_config_refuses_leaves_no_key_behind(config):
    before = (config.read_text(), (config.parent / ".env").read_text())
    unknown = add(config, "alice", "--chains", "nope")
    assert unknown.exit_code == 2 and "no chain named 'nope'" in unknown.stderr
    bad_name = add(config, "no spaces")
    assert bad_name.exit_code == 2 and "is not a client name" in bad_name.stderr
    assert (config.read_text(), (config.parent / ".env").read_text()) == before
    add(config, "alice")
    again = add(config, "alice")
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_names_that_share_a_variable_get_their_own(config):
    first = add(config, "a-b").stdout.strip()
    second = add(config, "a_b").stdout.strip()
    keys = read_dotenv(config.parent / ".env")
    assert keys["CHAIN429_CLIENT_A_B_KEY"] == first
    assert keys["CHAIN429_CLIENT_A_B_2_KEY"] == second
    assert [c.key for c in load_config(config).clients] == [first, second]


def test_remove_drops_the_client_and_its_key(config):
    add(config, "alice")
    add(config, "bob")
    done = cli("client", "remove", "alice", "-c", str(config))
    assert done.exit_code == 0, done.output
    assert [c.name for c in load_config(config).clients] == ["bob"]
    keys = read_dotenv(config.parent / ".env")
    assert "CHAIN429_CLIENT_ALICE_KEY" not in keys and "CHAIN429_CLIENT_BOB_KEY" in keys
    assert keys["OTHER"] == "1"


@pytest.fixture
def server(fake, tmp_path):
    """A server running the config file of `config`, with a request log."""
    provider = fake("a")
    path = tmp_path / "chain429.yaml"
    path.write_text(CONFIG.format(url=provider.base_url))
    (tmp_path / ".env").write_text(f"CHAIN429_ADMIN_KEY={ADMIN_KEY}\n")
    database = open_database(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(database)
    app = create_app(
        load_config(path), config_path=path, telemetry=Telemetry(database, batch_interval_s=0.01)
    )
    running = ServerThread(app).start()
    yield path, running.url
    running.stop()


def chat(url: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "main", "messages": HELLO},
        timeout=10,
    )


def test_a_running_server_takes_new_and_rotated_keys_at_once(server):
    path, url = server
    added = cli(
        "client", "add", "bob", "--rpm", "5", "--budget", "0.5", "-c", str(path), "--server", url
    )
    assert added.exit_code == 0, added.output
    assert "took the change" in added.stderr
    old = added.stdout.strip()
    assert chat(url, old).status_code == 200

    rotated = cli("client", "rotate", "bob", "-c", str(path), "--server", url)
    assert rotated.exit_code == 0, rotated.output
    new = rotated.stdout.strip()
    assert KEY.match(new) and new != old
    assert read_dotenv(path.parent / ".env")["CHAIN429_CLIENT_BOB_KEY"] == new
    assert chat(url, old).status_code == 401
    answer = chat(url, new)
    assert answer.status_code == 200 and answer.headers["x-429chain-client"] == "bob"

    shown = cli("client", "show", "bob", "-c", str(path), "--server", url, "--json")
    usage = json.loads(shown.stdout)["usage"]
    assert [(q["window"], q["limit"], q["remaining"]) for q in usage] == [("minute", 5, 3)]
    budget = json.loads(shown.stdout)["budget"]  # its own paid budget today, nothing spent
    assert (budget["cap_usd"], budget["spent_usd"], budget["left_usd"]) == (0.5, 0, 0.5)
    plain = cli("client", "show", "bob", "-c", str(path), "--server", url).stdout
    assert "paid budget today: $0.00 spent, $0.50 left of $0.50 (resets " in plain

    time.sleep(0.2)  # the log writer's batch
    by_client = cli("stats", "--by", "client", "-c", str(path), "--server", url, "--json")
    assert by_client.exit_code == 0, by_client.output
    body = json.loads(by_client.stdout)
    rows = {row["client"]: row for row in body["clients"]}
    assert rows["bob"]["requests"] == 2 and rows[None]["requests"] == 1  # the refused old key
    assert "providers" not in body
    table = cli("stats", "--by", "client", "-c", str(path), "--server", url)
    assert "CLIENT" in table.stdout and "bob" in table.stdout and "(anonymous)" in table.stdout
    logs = cli("logs", "--client", "bob", "-c", str(path), "--server", url, "--json")
    bobs = json.loads(logs.stdout)["data"]
    assert {r["client"] for r in bobs} == {"bob"}
    plain = cli("logs", "--client", "bob", "-c", str(path), "--server", url).stdout.splitlines()
    client_column = plain[0].split("\t").index("CLIENT")
    assert {line.split("\t")[client_column] for line in plain[1:]} == {"bob"}
    one = cli("logs", bobs[0]["id"], "-c", str(path), "--server", url).stdout.splitlines()[0]
    assert one.endswith(", client bob")
