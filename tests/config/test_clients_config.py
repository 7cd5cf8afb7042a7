"""The `clients:` section as a file says it: what the loader refuses (with lines), what the
masking and the diffs show of a client key (never its value), and the exposure rule."""

from __future__ import annotations

from typing import Any

import pytest

from chain429.config.diff import diff_configs, unified_diff
from chain429.config.errors import ConfigError
from chain429.config.loader import parse_config_text
from chain429.config.masking import mask_config
from chain429.config.model import Config
from chain429.server.auth import exposure_problem

ANA = "ana-secret-key-0123456789"
BEN = "ben-secret-key-0123456789"
ENV = {"ANA_KEY": ANA, "BEN_KEY": BEN, "SHORT": "short-key", "PROXY": "proxy-key-0123456789"}

BASE = """\
version: 1
settings:
  apiKeys: ["${PROXY}"]
providers:
  - {id: p, type: generic-openai, baseUrl: "https://llm.example/v1"}
chains:
  - name: fast
    entries: [{provider: p, model: m}]
  - name: smart
    entries: [{provider: p, model: big}]
clients:
"""


def load(clients: str, environ: dict[str, str] | None = None) -> Config:
    return parse_config_text(BASE + clients, filename="c.yaml", environ=environ or ENV)


def problems(clients: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as refused:
        load(clients)
    return [(i.line, i.path, i.message) for i in refused.value.issues]


def test_a_client_with_a_referenced_key_loads():
    config = load(
        "  - name: ana\n    key: ${ANA_KEY}\n    chains: [fast]\n    requestsPerMinute: 5\n"
    )
    (ana,) = config.clients
    assert (ana.name, ana.key, ana.chains, ana.requests_per_minute) == ("ana", ANA, ("fast",), 5)
    assert config.client("ana") is ana and config.client("nobody") is None


def test_a_key_written_in_the_file_is_refused_with_its_line():
    (problem,) = problems(f"  - name: ana\n    key: {ANA}\n")
    line, path, message = problem
    assert (line, path) == (13, "clients[0].key")
    assert "write the key as a ${VAR} reference" in message and ANA not in message


@pytest.mark.parametrize(
    ("clients", "path", "fragment"),
    [
        (
            "  - {name: ana, key: '${ANA_KEY}'}\n  - {name: ana, key: '${BEN_KEY}'}\n",
            "clients[1].name",
            "duplicate client name 'ana' (already used by clients[0])",
        ),
        (
            "  - {name: ana, key: '${ANA_KEY}', chains: [fsat]}\n",
            "clients[0].chains[0]",
            "no chain named 'fsat'; did you mean 'fast'?",
        ),
        (
            "  - {name: ana, key: '${ANA_KEY}'}\n  - {name: ben, key: '${ANA_KEY}'}\n",
            "clients[1].key",
            "the same key as clients[0].key",
        ),
        (
            "  - {name: ana, key: '${PROXY}'}\n",
            "clients[0].key",
            "the same key as settings.apiKeys[0]",
        ),
        ("  - {name: ana, key: '${SHORT}'}\n", "clients[0].key", "at least 16 characters"),
        ("  - {name: 'a b', key: '${ANA_KEY}'}\n", "clients[0].name", "pattern"),
        ("  - {name: ana, key: '${ANA_KEY}', chains: []}\n", "clients[0].chains", "not be empty"),
    ],
)
def test_what_the_loader_refuses(clients, path, fragment):
    found = problems(clients)
    assert any(p == path and fragment in m for _, p, m in found), found
    assert all(ANA not in m and "short-key" not in m and "proxy-key" not in m for *_, m in found)


def test_clients_guard_the_network_and_a_wildcard_origin():
    text = BASE.replace('  apiKeys: ["${PROXY}"]\n', '  corsOrigins: ["*"]\n')
    config = parse_config_text(text + "  - {name: ana, key: '${ANA_KEY}'}\n", environ=ENV)
    assert exposure_problem(config, "0.0.0.0") is None
    without = parse_config_text(BASE.replace('  apiKeys: ["${PROXY}"]\n', ""), environ=ENV)
    assert "without settings.apiKeys or clients" in (exposure_problem(without, "0.0.0.0") or "")


def dumped(config: Config) -> dict[str, Any]:
    return config.model_dump(mode="json", by_alias=True)


def test_a_client_key_is_masked_and_its_change_shown_without_it():
    old = load("  - {name: ana, key: '${ANA_KEY}', requestsPerMinute: 5}\n")
    both = "  - {name: ana, key: '${ANA_KEY}', requestsPerMinute: 9}\n"
    both += "  - {name: ben, key: '${BEN_KEY}'}\n"
    new = load(both, {**ENV, "ANA_KEY": "ana-rotated-key-0123456"})
    masked = mask_config({"clients": [{"name": "ana", "key": ANA}]})
    assert masked["clients"][0]["key"] == "ana\u20266789"
    diff = diff_configs(old, new)
    assert diff.clients_added == ("ben",) and not diff.empty
    lines = diff.summary_lines()
    assert "+ client ben" in lines
    assert "~ client ana: key (changed)" in lines
    assert "~ client ana: requestsPerMinute 5 -> 9" in lines
    shown = str(diff.to_dict()) + "\n".join(lines) + unified_diff(old, new)
    assert ANA not in shown and BEN not in shown and "ana-rotated" not in shown
    assert diff_configs(new, old).clients_removed == ("ben",)
