"""The commands that talk to a server, run as a user runs them: a real `chain429 serve`
with a request log, fake providers, and the CLI as subprocesses with piped output."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from chain429.fakes.provider import FakeProvider, Reply
from fixtures.processes import CHAIN429, free_port, stop, wait_healthy

ADMIN_KEY = "adm-test-key-0123456789"
PROXY_KEY = "proxy-test-key-0123456789"
PROVIDER_KEY = "s3cret-provider-key-42"
HELLO = [{"role": "user", "content": "hi"}]


def config_text(port: int, a: FakeProvider, b: FakeProvider, db: Path, model: str = "m2") -> str:
    return (
        "# a comment the tests keep\n"
        "version: 1\n"
        "settings:\n"
        f"  port: {port}\n"
        f"  apiKeys: [{PROXY_KEY}]\n"
        "  adminKeys: ['${T_ADMIN_KEY}']\n"
        f"  databaseUrl: sqlite:///{db}\n"
        "  paidBudgetUsdPerDay: 10\n"
        "providers:\n"
        f"  - {{id: a, type: generic-openai, baseUrl: '{a.base_url}', apiKey: {PROVIDER_KEY}}}\n"
        f"  - {{id: b, type: generic-openai, baseUrl: '{b.base_url}', apiKey: {PROVIDER_KEY},\n"
        "     paid: true, price: {inputPerMTok: 1000, outputPerMTok: 1000}}\n"
        "chains:\n"
        "  - name: c\n"
        "    entries:\n"
        "      - {provider: a, model: m}\n"
        f"      - {{provider: b, model: {model}}}\n"
    )


class Server:
    def __init__(self, root: Path, a: FakeProvider, b: FakeProvider) -> None:
        self.root, self.a, self.b = root, a, b
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = root / "log.db"
        self.config = root / "chain429.yaml"
        self.text = config_text(self.port, a, b, self.db)
        self.config.write_text(self.text)
        self.first_id = ""

    def variant(self, name: str, model: str) -> Path:
        path = self.root / name
        path.write_text(config_text(self.port, self.a, self.b, self.db, model))
        return path

    def chat(self, n: int = 1) -> list[str]:
        ids = []
        headers = {"authorization": f"Bearer {PROXY_KEY}"}
        for _ in range(n):
            body = {"model": "c", "messages": HELLO}
            response = httpx.post(f"{self.url}/v1/chat/completions", json=body, headers=headers)
            assert response.status_code == 200
            ids.append(response.headers["x-request-id"])
        return ids


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHAIN429_", "CONFIG_PATH"))}
    env.update({"CHAIN429_CONFIG_DIR": str(home), "T_ADMIN_KEY": ADMIN_KEY, "COLUMNS": "200"})
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("server")
    with FakeProvider("a") as a, FakeProvider("b") as b:
        a.script(Reply.rate_limited("300"))  # a cools down: status shows it, the trail shows 429
        srv = Server(root, a, b)
        proc = subprocess.Popen(
            [*CHAIN429, "serve", "-c", str(srv.config)],
            env={**os.environ, "T_ADMIN_KEY": ADMIN_KEY},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_healthy(srv.url, proc)
            srv.first_id = srv.chat(3)[0]
            wait_logged(srv, 3)
            yield srv
        finally:
            stop(proc)


def wait_logged(srv: Server, n: int) -> None:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        body = httpx.get(f"{srv.url}/v1/stats/requests", headers=headers).json()
        if len(body["data"]) >= n:
            return
        time.sleep(0.1)
    raise AssertionError("requests were not logged")


@pytest.fixture
def cli(server: Server, tmp_path: Path):
    """Run the CLI piped, finding the server through the config file, like a user in its dir."""

    def run(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [*CHAIN429, *args],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=cwd or server.root,
            env=cli_env(tmp_path / "home", **env),
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    return run


def rows(stdout: str) -> list[list[str]]:
    return [line.split("\t") for line in stdout.splitlines() if line]


# -- status ------------------------------------------------------------------


def test_status_is_a_plain_table_when_piped(cli, server):
    result = cli("status")
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert table[0] == ["CHAIN", "ENTRY", "STATE", "REASON", "UNTIL", "REMAINING", "IN FLIGHT"]
    by_entry = {row[1]: row for row in table[1:]}
    assert by_entry["a/m"][2] == "cooling" and by_entry["a/m"][4].endswith("Z")
    assert by_entry["b/m2"][2] == "available"
    assert f"at {server.url}, config generation" in result.stderr


def test_status_json(cli):
    data = json.loads(cli("status", "--json").stdout)
    assert data["server"]["status"] == "ok" and data["server"]["config_generation"] >= 1
    assert {e["state"] for e in data["ratelimits"]["entries"]} == {"cooling", "available"}
    (budget,) = data["budgets"]["budgets"]
    assert budget["cap_usd"] == 10 and budget["spent_usd"] > 0


def test_status_shows_what_is_left_of_the_paid_budget(cli, server):
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    (budget,) = httpx.get(f"{server.url}/v1/admin/budgets", headers=headers).json()["budgets"]
    result = cli("status")
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    at = table.index(["PAID BUDGET", "CAP", "SPENT", "RESERVED", "LEFT", "RESETS"])
    everybody = table[at + 1]
    assert everybody[:2] == ["everybody", "$10.00"]
    assert everybody[2] == f"${budget['spent_usd']:.2f}" and everybody[3] == "$0.00"
    assert everybody[4] == f"${budget['left_usd']:.2f}" and everybody[5].endswith("Z")
    assert "Paid budgets today (UTC)" in result.stderr


def test_status_watch_stops_after_count(cli):
    result = cli("status", "--watch", "--count", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("CHAIN\tENTRY\tSTATE") == 2


# -- stats -------------------------------------------------------------------


def test_stats_tables_and_summary(cli):
    result = cli("stats", "--since", "1h")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    providers = {row[0]: row for row in rows(result.stdout) if len(row) == 9}
    assert providers["PROVIDER"][1] == "ANSWERED" and providers["PROVIDER"][7] == "COST"
    assert int(providers["b"][1]) >= 3 and "429=1" in providers["a"][8]
    # b is priced: what its answers cost; a answered nothing.
    assert providers["b"][7].startswith("$") and providers["a"][7] == "-"
    chain = next(line.split("\t") for line in lines if line.startswith("c\t"))
    assert chain[-1] == providers["b"][7]  # chain c's spend is b's
    assert "requests," in lines[-1] and "errors" in lines[-1]
    assert f"{providers['b'][7]} spent;" in lines[-1]


def test_stats_json(cli):
    data = json.loads(cli("stats", "--json").stdout)
    assert data["summary"]["requests"] >= 3
    assert {p["provider"] for p in data["providers"]} == {"a", "b"}
    assert [c["chain"] for c in data["chains"]] == ["c"]
    assert [p["provider"] for p in data["spend"]["providers"]] == ["b"]
    assert data["spend"]["total_usd"] > 0


# -- logs --------------------------------------------------------------------


def test_logs_newest_first_with_filters(cli):
    result = cli("logs")
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert table[0][:3] == ["TIME", "ID", "CHAIN"]
    times = [row[0] for row in table[1:]]
    assert len(times) >= 3 and times == sorted(times, reverse=True)
    limited = rows(cli("logs", "--provider", "b", "--limit", "2").stdout)[1:]
    assert len(limited) == 2 and {row[3] for row in limited} == {"b/m2"}
    # b is priced: each answer's cost; sent with an apiKeys key: no client.
    at = {name: table[0].index(name) for name in ("COST", "CLIENT")}
    assert all(row[at["COST"]].startswith("$") for row in limited)
    assert {row[at["CLIENT"]] for row in limited} == {"-"}
    assert rows(cli("logs", "--outcome", "all_providers_exhausted").stdout)[1:] == []
    typo = cli("logs", "--outcome", "sucess")  # not "no such requests": the words it takes
    assert typo.returncode == 2 and "must be one of success, client_error" in typo.stderr
    data = json.loads(cli("logs", "--json", "--chain", "c", "--status", "200").stdout)
    assert data["data"] and {r["status"] for r in data["data"]} == {200}


def test_logs_shows_one_requests_attempt_trail(cli, server):
    result = cli("logs", server.first_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{server.first_id} at ")
    assert ", cost $" in result.stdout.splitlines()[0]  # b answered, and b is priced
    trail = rows(result.stdout.split("\n", 1)[1])
    assert [row[1:4] for row in trail[1:]] == [["a/m", "429", "429"], ["b/m2", "200", "200"]]
    data = json.loads(cli("logs", server.first_id, "--json").stdout)
    assert [a["outcome"] for a in data["trail"]] == ["429", "200"]
    missing = cli("logs", "req_nope")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "req_nope" in missing.stderr


def test_logs_follow_prints_new_requests_as_they_arrive(server, tmp_path):
    proc = subprocess.Popen(
        [*CHAIN429, "logs", "--follow", "--count", "2", "--limit", "1", "--chain", "c"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=server.root,
        env=cli_env(tmp_path),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("TIME\tID")
        old = proc.stdout.readline().split("\t")[1]
        new = server.chat(2)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert old not in new
    assert [line.split("\t")[1] for line in out.splitlines()] == new


# -- reload ------------------------------------------------------------------


def test_reload_prints_the_generation_and_exits_1_on_an_invalid_file(cli, server):
    result = cli("reload")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(":")[0] in ("reloaded", "unchanged")
    generation = int(result.stdout.split()[-1])
    data = json.loads(cli("reload", "--json").stdout)
    assert data["generation"] >= generation and data["errors"] is None

    # Still found through the broken file: its port and ${T_ADMIN_KEY} are read leniently.
    server.config.write_text(server.text.replace("{provider: b,", "{provider: nobody,"))
    try:
        bad = cli("reload")
    finally:
        server.config.write_text(server.text)
    assert bad.returncode == 1
    assert f"{server.config}:" in bad.stdout and "chains[0].entries[1].provider" in bad.stdout
    assert "error: the config file is invalid; the server keeps generation" in bad.stderr


# -- diff --------------------------------------------------------------------


def test_diff_against_the_running_server(cli, server):
    same = cli("diff")
    assert same.returncode == 0, same.stderr
    assert same.stdout == "" and "no differences" in same.stderr

    changed = server.variant("new.yaml", "m3")
    result = cli("diff", str(changed))
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == ["~ chain c: + b/m3", "~ chain c: - b/m2"]
    assert f"from the server at {server.url}" in result.stderr

    unified = cli("diff", str(changed), "--unified").stdout
    assert "-    model: m2\n" in unified and "+    model: m3\n" in unified

    data = json.loads(cli("diff", str(changed), "--json").stdout)
    assert data["same"] is False and data["new"] == str(changed)
    assert data["diff"]["chains"]["changed"][0]["added"] == ["b/m3"]
    assert PROVIDER_KEY not in json.dumps(data)


def test_diff_two_files_locally(cli, server):
    changed = server.variant("other.yaml", "m9")
    result = cli("diff", str(changed), "--against", str(server.config), "--server", "http://x:1")
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == ["~ chain c: + b/m9", "~ chain c: - b/m2"]
    back = cli("diff", str(server.config), "--against", str(changed))
    assert back.stdout.splitlines() == ["~ chain c: + b/m2", "~ chain c: - b/m9"]
    same = cli("diff", str(server.config), "--against", str(server.config), "--json")
    assert (same.returncode, json.loads(same.stdout)["same"]) == (0, True)


def test_diff_exits_2_on_an_invalid_file_or_no_server(cli, server, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nsettings:\n  port: abc\n")
    remote = cli("diff", str(bad))
    assert remote.returncode == 2
    assert f"{bad}:3: settings.port" in remote.stderr and remote.stdout == ""
    local = cli("diff", str(bad), "--against", str(server.config))
    assert local.returncode == 2 and f"{bad}:3: settings.port" in local.stderr
    down = cli("diff", "--server", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 2 and "no chain429 server at" in down.stderr


# -- errors ------------------------------------------------------------------


def test_an_unreachable_server_is_one_line_and_exit_2(cli):
    url = f"http://127.0.0.1:{free_port()}"
    for args, env in [
        (("status", "--server", url), {}),
        (("stats",), {"CHAIN429_SERVER": url}),
        (("reload", "--server", url), {}),
    ]:
        result = cli(*args, **env)
        assert result.returncode == 2, args
        assert result.stdout == ""
        assert result.stderr == f"error: no chain429 server at {url}: connection refused\n"


def test_a_wrong_admin_key_is_one_line_and_exit_2(cli):
    result = cli("stats", CHAIN429_ADMIN_KEY="wrong")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "CHAIN429_ADMIN_KEY" in result.stderr


# -- contexts ----------------------------------------------------------------


def test_contexts_round_trip_keeps_hand_edits(cli, server, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    path = home / "contexts.toml"
    path.write_text(
        "# my servers, edited by hand\n\n[contexts.old]  # the old box\nserver = 'http://old:1'\n"
    )
    added = cli("context", "add", "local", "--server", server.url, "--admin-key-env", "MY_KEY")
    assert added.returncode == 0, added.stderr
    assert cli("context", "use", "local").returncode == 0
    text = path.read_text()
    assert text.startswith('# my servers, edited by hand\ncurrent = "local"\n')
    assert "[contexts.old]  # the old box\nserver = 'http://old:1'\n" in text
    assert 'admin_key_env = "MY_KEY"' in text and ADMIN_KEY not in text

    listed = rows(cli("context", "list").stdout)
    assert listed[0] == ["CURRENT", "NAME", "SERVER", "ADMIN KEY ENV"]
    assert ["*", "local", server.url, "MY_KEY"] in listed and [
        "",
        "old",
        "http://old:1",
        "",
    ] in listed
    data = json.loads(cli("context", "list", "--json").stdout)
    assert data["current"] == "local"
    assert {c["name"]: c["current"] for c in data["contexts"]} == {"old": False, "local": True}

    # Away from the config file: the server and the key's variable come from the context.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = cli("stats", "--json", cwd=elsewhere, MY_KEY=ADMIN_KEY, T_ADMIN_KEY="")
    assert result.returncode == 0, result.stderr
    unknown = cli("context", "use", "nope")
    assert unknown.returncode == 2
    assert unknown.stderr == "error: no context named 'nope'; contexts: old, local\n"


# -- config path|show --------------------------------------------------------


def test_config_path_says_how_it_was_found(cli, server, tmp_path):
    here = cli("config", "path")
    assert (here.stdout, here.stderr) == (
        f"{server.config}\n",
        "chain429.yaml in the current directory\n",
    )
    data = json.loads(
        cli("config", "path", "--json", CHAIN429_CONFIG=str(tmp_path / "x.yaml")).stdout
    )
    assert data == {
        "path": str(tmp_path / "x.yaml"),
        "found_by": "from $CHAIN429_CONFIG",
        "exists": False,
    }


def test_config_show_masks_secrets(cli, server, tmp_path):
    result = cli("config", "show")
    assert result.returncode == 0, result.stderr
    assert "adminKeys:\n  - ${T_ADMIN_KEY}" in result.stdout
    assert PROVIDER_KEY not in result.stdout and PROXY_KEY not in result.stdout
    data = json.loads(cli("config", "show", "--json").stdout)
    assert data["providers"][0]["apiKey"] == "s3c…y-42"
    missing = cli("config", "show", "-c", str(tmp_path / "none.yaml"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: no config file at")


def test_stats_names_the_rows_of_no_provider_and_no_chain(tmp_path):
    """Requests nobody answered, and one for no chain: `-` in their cells, never `None`."""
    with FakeProvider("dead", default=Reply.rate_limited("300")) as dead:
        port = free_port()
        config = tmp_path / "chain429.yaml"
        config.write_text(
            f"version: 1\nsettings:\n  port: {port}\n  databaseUrl: sqlite:///{tmp_path}/l.db\n"
            f"providers:\n  - {{id: dead, type: generic-openai, baseUrl: '{dead.base_url}'}}\n"
            "chains:\n  - {name: c, entries: [{provider: dead, model: m}]}\n"
        )
        proc = subprocess.Popen(
            [*CHAIN429, "serve", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, proc)
            for model in ("c", "no-such-chain"):
                body = {"model": model, "messages": HELLO}
                assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code >= 400
            deadline = time.monotonic() + 10
            while len(httpx.get(f"{url}/v1/stats/requests").json()["data"]) < 2:
                assert time.monotonic() < deadline, "requests were not logged"
                time.sleep(0.1)
            result = subprocess.run(
                [*CHAIN429, "stats", "-c", str(config)],
                capture_output=True,
                text=True,
                timeout=30,
                env=cli_env(tmp_path / "home"),
            )
        finally:
            stop(proc)
    assert result.returncode == 0, result.stderr
    assert "None" not in result.stdout
    table = rows(result.stdout)
    assert ["(unanswered)", "2"] in [row[:2] for row in table]  # nobody answered the two
    assert ["(no chain)", "1"] in [row[:2] for row in table]  # the request for no chain
    assert result.stdout.splitlines()[-1].startswith("2 requests, 0 ok, 2 errors")


# -- a rejected config file ----------------------------------------------------


def test_a_rejected_config_file_shows_in_health_status_metrics_and_once_in_the_log(tmp_path):
    with FakeProvider("a") as a, FakeProvider("b") as b:
        srv = Server(tmp_path, a, b)
        proc = subprocess.Popen(
            [*CHAIN429, "serve", "-c", str(srv.config)],
            env={**os.environ, "T_ADMIN_KEY": ADMIN_KEY},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        try:
            wait_healthy(srv.url, proc)
            srv.config.write_text(srv.text.replace("{provider: a,", "{provider: ghost,"))
            deadline = time.monotonic() + 10
            while httpx.get(f"{srv.url}/health").json()["status"] != "degraded":
                assert time.monotonic() < deadline, "the rejected file never showed"
                time.sleep(0.1)
            time.sleep(1.5)  # three more polls of an unchanged file: no more log lines
            public = httpx.get(f"{srv.url}/health")
            assert public.status_code == 200  # a load balancer keeps the instance
            assert "errors" not in public.json()["config_error"]
            metrics = httpx.get(f"{srv.url}/metrics", headers=admin).text
            assert "chain429_config_rejected 1.0" in metrics
            result = subprocess.run(
                [*CHAIN429, "status", "-c", str(srv.config)],
                capture_output=True,
                text=True,
                timeout=30,
                env=cli_env(tmp_path / "home"),
            )
            assert result.returncode == 0, result.stderr
            first, second = result.stderr.splitlines()[:2]
            assert first.startswith("error: the config file on disk was rejected at ")
            assert "chains[0].entries[0].provider: no provider with id 'ghost'" in second
            assert srv.chat()  # the last good config serves
            srv.config.write_text(srv.text)
            while httpx.get(f"{srv.url}/health").json()["status"] != "ok":
                assert time.monotonic() < deadline + 10
                time.sleep(0.1)
            assert (
                "chain429_config_rejected 0.0"
                in httpx.get(f"{srv.url}/metrics", headers=admin).text
            )
        finally:
            stop(proc)
        log = proc.stderr.read() if proc.stderr else ""
    assert log.count("config not reloaded") == 1, log
