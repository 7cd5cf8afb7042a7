"""init, provider ..., chain ...: the commands that write the config file.

In-process through typer's CliRunner where no terminal is needed, as real
processes where it matters (no TTY, a running server), and the wizards driven
by keystrokes through prompt_toolkit's pipe input.
"""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from chain429.cli import env_file, wizard
from chain429.config.loader import load_config, parse_config_text, read_dotenv
from chain429.fakes.provider import FakeProvider, Reply
from fixtures.cli_edits import assert_comments_kept, cli, commented
from fixtures.processes import free_port, run, serving, wait_healthy

DOWN, ENTER, SPACE, CTRL_C = "\x1b[B", "\r", " ", "\x03"


# --- pure parts ----------------------------------------------------------------------
def test_parse_entry_splits_at_the_first_colon():
    assert wizard.parse_entry("groq:llama-3.1-8b-instant") == ("groq", "llama-3.1-8b-instant")
    assert wizard.parse_entry("or:meta-llama/x:free") == ("or", "meta-llama/x:free")
    for bad in ("groq", ":m", "groq:"):
        with pytest.raises(ValueError, match="PROVIDER:MODEL"):
            wizard.parse_entry(bad)


def test_detect_keys_prefers_gemini_and_ignores_empty_values():
    env = {"GOOGLE_API_KEY": "g", "GROQ_API_KEY": "", "MISTRAL_API_KEY": "m"}
    assert wizard.detect_keys(env) == {"google-ai": "GOOGLE_API_KEY", "mistral": "MISTRAL_API_KEY"}
    env["GEMINI_API_KEY"] = "x"
    assert wizard.detect_keys(env)["google-ai"] == "GEMINI_API_KEY"


def test_rendered_config_is_valid_with_paid_provider_last():
    plan = wizard.plan(["openai", "openrouter", "groq"], {}, port=4000)
    text = wizard.render_config(plan)
    env = {var: "v" for var in env_file.referenced_vars(text)}
    config = parse_config_text(text, environ=env)
    assert config.settings.port == 4000 and config.settings.default_chain == "fast"
    assert [p.id for p in config.providers][-1] == "openai" and config.provider("openai").paid
    for chain in config.chains:
        assert chain.entries[-1].provider == "openai"
    smart = config.chain("smart")
    assert smart is not None and smart.entries[0].model.endswith(":free")
    assert config.settings.admin_keys == ("v",)  # init's admin key, from .env
    assert '  adminKeys: ["${CHAIN429_ADMIN_KEY}"]' in text
    assert env_file.referenced_vars(text) == {
        "CHAIN429_API_KEY",
        "CHAIN429_ADMIN_KEY",
        "OPENAI_API_KEY",
        "OPENROUTER_API_KEY",
        "GROQ_API_KEY",
    }


def test_upsert_dotenv_keeps_other_lines_and_is_private(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("# mine\nGROQ_API_KEY=g\nexport CHAIN429_API_KEY=old\nCHAIN429_API_KEY=dup")
    dotenv.chmod(0o644)
    env_file.upsert_dotenv(dotenv, "CHAIN429_API_KEY", "new")
    assert dotenv.read_text() == "# mine\nGROQ_API_KEY=g\nexport CHAIN429_API_KEY=new\n"
    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600
    env_file.upsert_dotenv(dotenv, "OTHER", "x")
    assert dotenv.read_text().endswith("CHAIN429_API_KEY=new\nOTHER=x\n")


# --- wizards, driven by keystrokes --------------------------------------------------------
@contextmanager
def keystrokes(*keys: str) -> Iterator[None]:
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        pipe.send_text("".join(keys))
        yield


def test_init_wizard_ticks_found_keys_and_asks_chains_and_port():
    # openrouter (unticked) gets ticked; groq was found; untick "smart"; port 8080;
    # failing entries: the first answer (move on at once).
    with keystrokes(SPACE, ENTER, DOWN, SPACE, ENTER, "\x7f" * 4, "8080", ENTER, ENTER):
        plan = wizard.ask_init({"groq": "GROQ_API_KEY"}, 3429)
    assert plan.providers == {"openrouter": "OPENROUTER_API_KEY", "groq": "GROQ_API_KEY"}
    assert (plan.chains, plan.port) == (("fast",), 8080)
    assert plan.failover is wizard.Failover.WATERFALL


def test_init_asks_whether_the_chain_order_is_a_preference(tmp_path):
    """Equals: the plain waterfall (no settings.retry); a preference: one retry, short waits."""
    with keystrokes(ENTER, ENTER, ENTER, DOWN, ENTER):
        plan = wizard.ask_init({"groq": "GROQ_API_KEY"}, 3429)
    assert plan.failover is wizard.Failover.PREFERRED
    for choice, expected in (("waterfall", (0, 0)), ("preferred", (1, 3000))):
        path = tmp_path / choice / "chain429.yaml"
        path.parent.mkdir()
        result = cli("init", "--yes", "--failover", choice, "-c", str(path), env=KEYS)
        assert result.exit_code == 0, result.output
        retry = load_config(path, environ=KEYS | dict(read_dotenv(path.parent / ".env")))
        assert (retry.settings.retry.attempts, retry.settings.retry.short_wait_ms) == expected


def test_chain_wizard_picks_entries_and_orders_them():
    keys = [ENTER, ENTER]  # groq, its suggested model
    keys += [DOWN, ENTER, "meta-llama/x:free", ENTER]  # local, a model with a colon
    keys += [DOWN, DOWN, ENTER]  # no more entries
    keys += ["n", DOWN, ENTER]  # not this order: local goes first
    with keystrokes(*keys):
        entries = wizard.ask_entries({"groq": "groq", "local": "generic-openai"})
    assert entries == [("local", "meta-llama/x:free"), ("groq", "llama-3.1-8b-instant")]


def test_provider_wizard_asks_only_what_flags_left_out():
    with keystrokes("http://127.0.0.1:1/v1", ENTER, ENTER):
        answers = wizard.ask_provider("loc", "generic-openai", "Local", None, None)
    assert answers == wizard.ProviderAnswers(
        "generic-openai", "Local", "http://127.0.0.1:1/v1", "LOC_API_KEY"
    )


def test_ctrl_c_in_a_wizard_cancels():
    with keystrokes(CTRL_C), pytest.raises(wizard.Cancelled):
        wizard.ask_entries({"groq": "groq"})


def test_chain_add_wizard_through_the_cli(tmp_path, monkeypatch):
    path = commented(tmp_path)
    monkeypatch.setattr(wizard, "can_prompt", lambda: True)
    with keystrokes(DOWN, ENTER, "m2", ENTER, DOWN, DOWN, ENTER):
        result = cli("chain", "add", "picked", "-c", str(path))
    assert result.exit_code == 0, result.output
    shown = json.loads(cli("chain", "show", "picked", "-c", str(path), "--json").stdout)
    assert [(e["provider"], e["model"]) for e in shown["entries"]] == [("local", "m2")]


# --- init -----------------------------------------------------------------------------------
KEYS = {"GROQ_API_KEY": "gsk-real-groq", "CEREBRAS_API_KEY": "csk-real", "OPENAI_API_KEY": "sk-o"}


def test_init_yes_writes_a_valid_config_and_a_private_env(tmp_path):
    path = tmp_path / "chain429.yaml"
    (tmp_path / ".env").write_text("KEEP=me\n")
    result = cli("init", "--yes", "-c", str(path), "--port", "4011", env=KEYS)
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert len(key) >= 40 and "\n" not in key
    assert "shown only" not in result.stderr and key not in result.stderr
    assert "it is in" in result.stderr and "as CHAIN429_API_KEY" in result.stderr
    dotenv = tmp_path / ".env"
    values = read_dotenv(dotenv)
    admin = values["CHAIN429_ADMIN_KEY"]
    assert dotenv.read_text().startswith(f"KEEP=me\nCHAIN429_API_KEY={key}\n")
    assert values["KEEP"] == "me" and len(admin) >= 40 and admin != key
    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600
    text = path.read_text()
    assert key not in text and not any(secret in text for secret in KEYS.values())
    assert "${CHAIN429_API_KEY}" in text and "${GROQ_API_KEY}" in text and "#" in text
    assert "${MISTRAL_API_KEY}" not in text  # only the providers whose keys are set
    checked = run("validate", str(path), env=KEYS)
    assert (checked.returncode, checked.stdout.strip()) == (0, "ok"), checked.stdout
    data = json.loads(cli("provider", "list", "-c", str(path), "--json").stdout)
    assert [p["id"] for p in data] == ["groq", "cerebras", "openai"] and data[-1]["paid"]


def test_init_never_overwrites_without_force(tmp_path):
    path = tmp_path / "chain429.yaml"
    path.write_text("# mine\n")
    result = cli("init", "--yes", "-c", str(path), env=KEYS)
    assert result.exit_code == 2 and "--force" in result.stderr
    assert path.read_text() == "# mine\n" and not (tmp_path / ".env").exists()
    first = cli("init", "--yes", "--force", "-c", str(path), env=KEYS)
    keys = read_dotenv(tmp_path / ".env")
    second = cli("init", "--yes", "--force", "-c", str(path), "-p", "groq", env=KEYS)
    assert first.exit_code == second.exit_code == 0
    assert first.stdout == second.stdout == f"{keys['CHAIN429_API_KEY']}\n"  # kept, not replaced
    assert read_dotenv(tmp_path / ".env") == keys
    assert "kept the proxy key" in second.stderr and "kept the admin key" in second.stderr
    assert "${OPENAI_API_KEY}" not in path.read_text()


def test_init_without_a_terminal_fails_at_once_naming_flags(tmp_path):
    started = time.monotonic()
    result = run("init", cwd=tmp_path, timeout=10)
    assert result.returncode == 2
    assert "--yes" in result.stderr and "--provider" in result.stderr
    assert time.monotonic() - started < 10 and not (tmp_path / "chain429.yaml").exists()


def test_init_yes_needs_a_key_or_a_provider(tmp_path):
    result = cli("init", "--yes", "-c", str(tmp_path / "c.yaml"))
    assert result.exit_code == 2 and "GROQ_API_KEY" in result.stderr
    assert cli("init", "-y", "-p", "nope", "-c", str(tmp_path / "c.yaml")).exit_code == 2
    named = cli("init", "-y", "-p", "gemini", "-c", str(tmp_path / "c.yaml"))
    assert named.exit_code == 0 and "set GEMINI_API_KEY" in named.stderr
    assert "${GEMINI_API_KEY}" in (tmp_path / "c.yaml").read_text()


# --- provider -------------------------------------------------------------------------------
def test_provider_add_list_show_remove_keep_comments(tmp_path):
    path = commented(tmp_path)
    added = cli(
        "provider", "add", "cb", "--type", "cerebras", "--name", "Cerebras", "-c", str(path)
    )
    assert added.exit_code == 0, added.output
    assert "note: CEREBRAS_API_KEY, GROQ_API_KEY not set" in added.stderr
    assert "no chain429 server" in added.stderr
    assert "apiKey: ${CEREBRAS_API_KEY}" in path.read_text()
    assert_comments_kept(path)
    listed = cli("provider", "list", "-c", str(path)).stdout.splitlines()
    assert listed[0].split("\t")[:3] == ["ID", "TYPE", "NAME"]
    assert [line.split("\t")[0] for line in listed[1:]] == ["groq", "local", "cb"]
    shown = cli("provider", "show", "local", "-c", str(path), "--json")
    assert "sk-literal-secret-123456" not in shown.stdout
    assert json.loads(shown.stdout)["usedBy"] == ["main"]
    assert "sk-literal-secret" not in cli("provider", "list", "-c", str(path)).stdout
    again = cli("provider", "add", "cb", "--type", "groq", "-c", str(path))
    assert again.exit_code == 2 and "already exists" in again.stderr
    removed = cli("provider", "remove", "cb", "-c", str(path))
    assert removed.exit_code == 0 and "cb" not in path.read_text()
    assert_comments_kept(path)


def test_provider_remove_in_use_exits_2_naming_chains(tmp_path):
    path = commented(tmp_path)
    cli("chain", "add", "other", "-e", "groq:x", "-c", str(path))
    before = path.read_text()
    result = cli("provider", "remove", "groq", "-c", str(path))
    assert result.exit_code == 2
    assert "main" in result.stderr and "other" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and path.read_text() == before


def test_provider_add_api_key_env_and_generic_needs_a_base_url(tmp_path):
    path = commented(tmp_path)
    result = run("provider", "add", "x", "--type", "generic-openai", "-c", str(path))
    assert result.returncode == 2 and "--base-url" in result.stderr
    ok = cli(
        "provider",
        "add",
        "x",
        "--type",
        "generic-openai",
        "--base-url",
        "http://127.0.0.1:1/v1",
        "--api-key-env",
        "MY_KEY",
        "-c",
        str(path),
    )
    assert ok.exit_code == 0, ok.output
    assert "apiKey: ${MY_KEY}" in path.read_text()
    bad = cli("provider", "add", "y", "--type", "groq", "--api-key-env", "1x", "-c", str(path))
    assert bad.exit_code == 2


# --- chain ----------------------------------------------------------------------------------
def test_chain_add_move_remove_keep_comments(tmp_path):
    path = commented(tmp_path)
    added = cli(
        "chain", "add", "c2", "-e", "groq:a", "-e", "local:meta-llama/x:free", "-e", "groq:b",
        "-c", str(path),
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert_comments_kept(path)

    def order() -> list[tuple[int, str, str]]:
        data = json.loads(cli("chain", "show", "c2", "-c", str(path), "--json").stdout)
        return [(e["position"], e["provider"], e["model"]) for e in data["entries"]]

    assert order() == [(1, "groq", "a"), (2, "local", "meta-llama/x:free"), (3, "groq", "b")]
    moved = cli("chain", "move", "c2", "groq:b", "--to", "1", "-c", str(path))
    assert moved.exit_code == 0, moved.output
    assert order() == [(1, "groq", "b"), (2, "groq", "a"), (3, "local", "meta-llama/x:free")]
    assert cli("chain", "move", "c2", "groq:b", "--to", "9", "-c", str(path)).exit_code == 2
    assert cli("chain", "move", "c2", "groq:zz", "--to", "1", "-c", str(path)).exit_code == 2
    shown = cli("chain", "show", "c2", "-c", str(path)).stdout.splitlines()
    assert shown[1].split("\t") == ["1", "groq", "b", ""]
    listed = json.loads(cli("chain", "list", "-c", str(path), "--json").stdout)
    assert [(c["name"], c["default"]) for c in listed] == [("main", True), ("c2", False)]
    assert_comments_kept(path)
    assert cli("chain", "remove", "c2", "-c", str(path)).exit_code == 0
    assert "c2" not in path.read_text()
    refused = cli("chain", "remove", "main", "-c", str(path))
    assert refused.exit_code == 2 and "defaultChain" in refused.stderr
    assert_comments_kept(path)


def test_chain_add_errors_are_one_line_exit_2(tmp_path):
    path = commented(tmp_path)
    before = path.read_text()
    no_tty = run("chain", "add", "x", "-c", str(path))
    assert no_tty.returncode == 2 and "--entry" in no_tty.stderr
    for args in (["-e", "nope:m"], ["-e", "groq"]):
        result = cli("chain", "add", "x", *args, "-c", str(path))
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, args
    assert cli("chain", "add", "main", "-e", "groq:m", "-c", str(path)).exit_code == 2
    assert path.read_text() == before
    missing = cli("chain", "list", "-c", str(tmp_path / "none.yaml"))
    assert missing.exit_code == 2 and "chain429 init" in missing.stderr


# --- testing entries --------------------------------------------------------------------------
@pytest.fixture
def fakes() -> Iterator[tuple[FakeProvider, FakeProvider]]:
    quota = {"x-ratelimit-limit-requests": "30", "x-ratelimit-remaining-requests": "29"}
    with (
        FakeProvider("good", default=Reply(headers=quota)) as good,
        FakeProvider("bad", default=Reply.rate_limited("30")) as bad,
    ):
        yield good, bad


def probe_config(tmp_path: Path, good: FakeProvider, bad: FakeProvider) -> Path:
    path = tmp_path / "chain429.yaml"
    path.write_text(
        "version: 1\nproviders:\n"
        f"  - {{id: good, type: groq, baseUrl: '{good.base_url}', apiKey: k}}\n"
        f"  - {{id: bad, type: generic-openai, baseUrl: '{bad.base_url}', apiKey: k}}\n"
        "chains:\n"
        "  - {name: mixed, entries: [{provider: bad, model: m1}, {provider: good, model: m2}]}\n"
        "  - {name: dead, entries: [{provider: bad, model: m1}]}\n"
    )
    return path


def test_chain_test_exits_0_when_an_entry_works_and_1_when_none(tmp_path, fakes):
    path = probe_config(tmp_path, *fakes)
    result = cli("chain", "test", "mixed", "-c", str(path))
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert lines[0] == ["#", "ENTRY", "RESULT", "STATUS", "LATENCY", "TOKENS", "REMAINING"]
    assert lines[1][:4] == ["1", "bad/m1", "429", "429"]
    assert lines[2][:4] == ["2", "good/m2", "ok", "200"]
    assert lines[2][6] == "29/30 requests/day" and lines[2][5].endswith(" out")
    assert "1 of 2 entries work" in result.stderr
    dead = cli("chain", "test", "dead", "-c", str(path), "--json")
    assert dead.exit_code == 1
    assert json.loads(dead.stdout)["working"] == 0
    assert cli("chain", "test", "nope", "-c", str(path)).exit_code == 2


def test_chain_test_streaming(tmp_path, fakes):
    good, bad = fakes
    good.always(Reply.stream("hi there"))
    path = probe_config(tmp_path, good, bad)
    data = json.loads(cli("chain", "test", "mixed", "--stream", "-c", str(path), "--json").stdout)
    assert data["stream"] is True
    assert [e["result"] for e in data["entries"]] == ["429", "ok"]


def test_provider_test_uses_its_chain_entries_or_a_model(tmp_path, fakes):
    path = probe_config(tmp_path, *fakes)
    good = cli("provider", "test", "good", "-c", str(path), "--json")
    assert good.exit_code == 0
    assert [e["model"] for e in json.loads(good.stdout)["entries"]] == ["m2"]
    other = cli("provider", "test", "good", "--model", "zz", "-c", str(path), "--json")
    assert [e["model"] for e in json.loads(other.stdout)["entries"]] == ["zz"]
    assert cli("provider", "test", "bad", "-c", str(path)).exit_code == 1


# --- a running server ----------------------------------------------------------------------------
def test_a_running_server_takes_the_change(tmp_path):
    with FakeProvider("local") as fake:
        port = free_port()
        path = commented(tmp_path, port=port, url=fake.base_url)
        env = {"GROQ_API_KEY": "g"}
        url = f"http://127.0.0.1:{port}"
        with serving("-c", str(path), env=env) as proc:
            assert wait_healthy(url, proc)["config_generation"] == 1
            result = run("chain", "add", "extra", "-e", "local:m9", "-c", str(path), env=env)
            assert result.returncode == 0, result.stderr
            assert f"the server at {url} took the change (generation " in result.stderr
            generation = httpx.get(f"{url}/health").json()["config_generation"]
            assert generation >= 2 and f"(generation {generation})" in result.stderr
            models = httpx.get(f"{url}/v1/models", headers={"authorization": "Bearer k"}).json()
            assert "extra" in [m["id"] for m in models["data"]]
            wrong = run(
                "chain",
                "remove",
                "extra",
                "-c",
                str(path),
                env={**env, "CHAIN429_ADMIN_KEY": "bad"},
            )
            assert wrong.returncode == 0 and "Invalid API key" in wrong.stderr
        assert_comments_kept(path)


def test_init_wizard_through_the_cli(tmp_path, monkeypatch):
    path = tmp_path / "chain429.yaml"
    monkeypatch.setattr(wizard, "can_prompt", lambda: True)
    # groq's key is found (ticked); accept; both chains; the default port; move on at once.
    with keystrokes(ENTER, ENTER, ENTER, ENTER):
        result = cli("init", "-c", str(path), env={"GROQ_API_KEY": "g"})
    assert result.exit_code == 0, result.output
    assert "provider: groq" in path.read_text() and "openai" not in path.read_text()
    assert result.stdout.strip() in (tmp_path / ".env").read_text()
    with keystrokes(CTRL_C):
        cancelled = cli("init", "--force", "-c", str(path), env={"GROQ_API_KEY": "g"})
    assert cancelled.exit_code == 2 and "cancelled" in cancelled.stderr
