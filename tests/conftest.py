"""Fixtures every test may ask for: fake providers and chain429 servers on 127.0.0.1.

Helpers to import (configs, servers, processes, data) live in the `fixtures`
package beside this file, not here: a conftest is pytest's, not a module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chain429.config.model import Config
from chain429.fakes.provider import FakeProvider
from chain429.server.app import create_app
from chain429.server.serving import ServerThread
from fixtures.redis import redis_namespace
from fixtures.servers import Proxy


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Anything that falls back to the default request log writes here, not in ~."""
    os.environ["CHAIN429_HOME"] = str(tmp_path_factory.mktemp("chain429-home"))


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


@pytest.fixture
def redis_ns() -> Iterator[str]:
    """A `stateNamespace` of this test's own on the real Redis, deleted afterwards."""
    yield from redis_namespace()
