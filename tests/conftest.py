"""Real servers for tests: fake providers and the chain429 app, on 127.0.0.1 ephemeral ports."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from chain429.config.model import Config
from chain429.fakes.provider import FakeProvider
from chain429.server.app import create_app
from chain429.server.serving import ServerThread

REPO = Path(__file__).resolve().parents[1]
# A 429chain config of our own using every key of its schema; 429chain's own
# example (shared/compat/, beside the repository) is checked too when present.
COMPAT_CONFIG = REPO / "tests" / "engine" / "fixtures" / "429chain.yaml"
SHARED_COMPAT_CONFIG = REPO.parent / "shared" / "compat" / "429chain-config.example.yaml"
COMPAT_CONFIGS = [COMPAT_CONFIG, *([SHARED_COMPAT_CONFIG] if SHARED_COMPAT_CONFIG.exists() else [])]
PROXY_KEY = "test-proxy-key"


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Anything that falls back to the default request log writes here, not in ~."""
    os.environ["CHAIN429_HOME"] = str(tmp_path_factory.mktemp("chain429-home"))


@dataclass
class Proxy:
    """A running chain429 with the clients a test wants."""

    server: ServerThread
    api_key: str | None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def app(self) -> Any:
        return self.server.app

    def openai(self, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.api_key or "unused", **kwargs)

    def http(self, **kwargs: Any) -> httpx.Client:
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10, **kwargs)


@pytest.fixture
def fake() -> Iterator[Callable[..., FakeProvider]]:
    """Start fake providers on demand; all are stopped after the test."""
    started: list[FakeProvider] = []

    def start(name: str = "fake", **kwargs: Any) -> FakeProvider:
        provider = FakeProvider(name, **kwargs).start_in_thread()
        started.append(provider)
        return provider

    yield start
    for provider in started:
        provider.stop_thread()


def provider_entry(pid: str, fake: FakeProvider, **extra: Any) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "generic-openai",
        "baseUrl": fake.base_url,
        "apiKey": f"secret-{pid}",
        **extra,
    }


@pytest.fixture
def proxy() -> Iterator[Callable[..., Proxy]]:
    """Start chain429 on a config mapping (camelCase keys, as in YAML)."""
    started: list[ServerThread] = []

    def start(config: dict[str, Any] | Config, **app_kwargs: Any) -> Proxy:
        if not isinstance(config, Config):
            config = Config.model_validate(config)
        server = ServerThread(create_app(config, **app_kwargs)).start()
        started.append(server)
        keys = config.settings.api_keys
        return Proxy(server, keys[0] if keys else None)

    yield start
    for server in started:
        server.stop()


def chain_config(
    providers: list[dict[str, Any]],
    entries: list[tuple[str, str]],
    *,
    settings: dict[str, Any] | None = None,
    chain: str = "main",
) -> dict[str, Any]:
    """One chain over the given providers; a proxy key is set unless settings say otherwise."""
    return {
        "version": 1,
        "settings": {"apiKeys": [PROXY_KEY], "defaultChain": chain, **(settings or {})},
        "providers": providers,
        "chains": [{"name": chain, "entries": [{"provider": p, "model": m} for p, m in entries]}],
    }
