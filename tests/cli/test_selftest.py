"""`chain429 selftest`, run as a user runs it: their config, no keys, no network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chain429.fakes.faults import FAULTS
from fixtures.processes import run

SECRET = "gsk_live_0123456789abcdef-never-shown"
CONFIG = """\
version: 1
settings:
  apiKeys: ["${MY_PROXY_KEY}"]
  midStream: continue
providers:
  - {id: groq, type: groq, apiKey: "${GROQ_API_KEY}"}
  - {id: cerebras, type: cerebras, apiKey: "${CEREBRAS_API_KEY}", supportsPrefill: true}
chains:
  - name: fast
    entries:
      - {provider: groq, model: llama-3.3-70b-versatile}
      - {provider: cerebras, model: llama-3.3-70b}
  - name: solo
    entries:
      - {provider: cerebras, model: qwen-3-32b}
  - name: vectors          # not played: the faults are a chat client's
    kind: embeddings
    entries:
      - {provider: cerebras, model: embed-1}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "chain429.yaml"
    path.write_text(CONFIG)
    # A key in the .env beside the config, as `init` writes it: never read.
    (tmp_path / ".env").write_text(f"GROQ_API_KEY={SECRET}\n")
    return path


QUICK = ["--fault", "429-short", "--fault", "content-filter", "--fault", "stream-cut"]


def test_selftest_plays_the_faults_on_each_chain_without_keys(config):
    result = run(
        "selftest", "--config", str(config), "--json", *QUICK, env={"CEREBRAS_API_KEY": SECRET}
    )
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    runs = {(r["chain"], r["fault"], r["stream"]): r for r in report["runs"]}
    assert len(runs) == 2 * 3 * 2
    # A 429 on groq: the client gets the answer from cerebras, groq was asked once.
    short = runs[("fast", "429-short", False)]
    assert short["verdict"] == "complete"
    assert short["calls"] == {"groq/llama-3.3-70b-versatile": 1, "cerebras/llama-3.3-70b": 1}
    assert short["requests"][0]["provider"] == "cerebras/llama-3.3-70b"
    assert short["requests"][0]["trace"] == (
        "groq/llama-3.3-70b-versatile=429,cerebras/llama-3.3-70b=200"
    )
    # A stream cut mid-answer is finished on cerebras (midStream: continue, prefill).
    cut = runs[("fast", "stream-cut", True)]
    assert cut["verdict"] == "complete"
    assert cut["calls"] == {"groq/llama-3.3-70b-versatile": 1, "cerebras/llama-3.3-70b": 1}
    # A content filter is the client's clean error, on every chain.
    for chain in ("fast", "solo"):
        refused = runs[(chain, "content-filter", True)]["requests"][0]
        assert (refused["outcome"], refused["status"], refused["code"]) == (
            "error",
            400,
            "content_filter",
        )
    # A single-entry chain has nothing to fall through to: a clean 503, not a hang.
    alone = runs[("solo", "429-short", False)]["requests"][0]
    assert (alone["outcome"], alone["status"]) == ("error", 503)
    assert all(r["seconds"] < 10 for r in report["runs"])
    assert [f["name"] for f in report["faults"]] == ["429-short", "content-filter", "stream-cut"]


def test_selftest_prints_a_row_per_chain_and_fault(config):
    result = run("selftest", "--config", str(config), *QUICK)
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert lines[0] == ["chain", "fault", "plain", "stream", "most calls in 1.5 s"]
    rows = {(cells[0], cells[1]): cells[2:] for cells in lines[1:]}
    assert len(rows) == 2 * 3
    plain, stream, burst = rows[("fast", "content-filter")]
    assert plain.startswith("error content_filter in ") and stream.startswith(
        "error content_filter"
    )
    assert rows[("fast", "429-short")][0].startswith("answer cerebras/llama-3.3-70b in ")
    assert rows[("fast", "stream-cut")][1].startswith(
        "answer groq/llama-3.3-70b-versatile, finished by cerebras/llama-3.3-70b in "
    )
    assert "all 12 runs ended in a complete answer or a clean error" in result.stderr


def test_every_fault_runs_and_none_hangs_with_the_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "version: 1\nproviders:\n  - {id: a, type: groq}\n  - {id: b, type: mistral}\n"
        "chains:\n  - {name: c, entries: [{provider: a, model: m}, {provider: b, model: m}]}\n"
    )
    result = run("selftest", "--config", str(path), "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {r["fault"] for r in report["runs"]} == {f.name for f in FAULTS}
    assert all(r["verdict"] in ("complete", "error") for r in report["runs"])
    assert all(r["maxCallsIn1500ms"] <= 2 for r in report["runs"])
    assert report["seconds"] < 60


def test_a_wait_longer_than_a_client_will_stay_is_a_hang_and_exit_1(tmp_path):
    """Queue mode on a single-entry chain holds a request until the entry's Retry-After
    (60 s); the self-test's client gives up long before (2 x the longest timeout + 10 s)."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "version: 1\nsettings: {queueMode: true, requestTimeoutMs: 1000, "
        "firstTokenTimeoutMs: 1000, streamIdleTimeoutMs: 1000}\n"
        "providers:\n  - {id: a, type: groq}\n"
        "chains:\n  - {name: c, entries: [{provider: a, model: m}]}\n"
    )
    result = run("selftest", "--config", str(path), "--fault", "429-long", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert {r["verdict"] for r in report["runs"]} == {"hang"}
    assert all(12 <= r["seconds"] < 20 for r in report["runs"])
    assert "2 of 2 runs hung or were truncated: c/429-long/plain, c/429-long/stream" in (
        result.stderr
    )


def test_a_provider_url_or_key_from_the_environment_is_not_needed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "version: 1\nsettings: {apiKeys: ['${PROXY_KEY}']}\nproviders:\n"
        "  - {id: local, type: generic-openai, baseUrl: '${LOCAL_URL}', apiKey: '${KEY}'}\n"
        "chains:\n  - {name: c, entries: [{provider: local, model: m}]}\n"
    )
    result = run("selftest", "--config", str(path), "--fault", "no-done", "--json")
    assert result.returncode == 0, result.stderr
    assert {r["verdict"] for r in json.loads(result.stdout)["runs"]} == {"complete"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fault", "lightning"], "no fault named 'lightning'"),
        (["--chain", "slow"], "no chain named 'slow'"),
        (["--chain", "vectors"], "'vectors' is an embeddings chain"),
    ],
)
def test_unknown_fault_or_chain_is_a_usage_error(config, args, message):
    result = run("selftest", "--config", str(config), *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_a_broken_config_is_reported_with_its_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\nchains:\n  - {name: c, entries: [{provider: nope, model: m}]}\n")
    result = run("selftest", "--config", str(path))
    assert result.returncode == 2
    assert f"{path}:3" in result.stderr
