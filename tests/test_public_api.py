"""The public surface: what `from chain429 import ...` offers, pinned (as httpx's tests do).

Adding a name here is a promise to keep it; removing one breaks embedders.
"""

from __future__ import annotations

import subprocess
import sys

import chain429

EXPORTED = [
    "AttemptRecord",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "FakeProvider",
    "MemoryStateStore",
    "ReceivedRequest",
    "Reply",
    "RequestRecord",
    "ServerThread",
    "StateStore",
    "__version__",
    "create_app",
    "find_config_path",
    "load_config",
    "open_request_log",
    "parse_config_text",
    "serve",
]


def test_the_public_names_are_exactly_these():
    assert sorted(chain429.__all__) == sorted(EXPORTED)
    assert sorted([*chain429._EXPORTS, "__version__"]) == sorted(EXPORTED)
    assert sorted(dir(chain429)) == sorted(EXPORTED)


def test_every_public_name_resolves_to_the_real_thing():
    from chain429.fakes.provider import FakeProvider
    from chain429.server.app import create_app

    for name in EXPORTED:
        assert getattr(chain429, name) is not None, name
    assert chain429.FakeProvider is FakeProvider and chain429.create_app is create_app


def test_importing_chain429_loads_no_server():
    code = "import sys, chain429; print(any(m.startswith(('sanic', 'httpx')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_unknown_name_is_an_attribute_error():
    try:
        chain429.Router  # noqa: B018 - internal, not exported
    except AttributeError as err:
        assert "Router" in str(err)
    else:
        raise AssertionError("chain429.Router should not be public")


def test_embedding_works_end_to_end(tmp_path):
    """The docstring's example, as an embedder would write it."""
    import httpx

    with chain429.FakeProvider("groq") as fake:
        path = tmp_path / "chain429.yaml"
        path.write_text(
            "version: 1\nproviders:\n"
            f"  - {{id: groq, type: generic-openai, baseUrl: '{fake.base_url}'}}\n"
            "chains:\n  - {name: fast, entries: [{provider: groq, model: m}]}\n"
        )
        config = chain429.load_config(path)
        with chain429.ServerThread(chain429.create_app(config)) as server:
            body = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}
            answer = httpx.post(f"{server.url}/v1/chat/completions", json=body)
    assert answer.status_code == 200 and answer.headers["x-429chain-provider"] == "groq/m"
