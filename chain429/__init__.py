"""chain429: an OpenAI-compatible proxy that walks a chain of providers on 429.

The names below are the public surface, for embedding chain429 in a program
or testing against it; `tests/test_public_api.py` pins the list. Everything
else is internal and may change between releases, as may the modules these
come from. They are imported on first use, so `import chain429` (and every
`chain429` command) starts without loading the server.

    from chain429 import FakeProvider, ServerThread, create_app, load_config

    with FakeProvider("groq") as fake, ServerThread(create_app(load_config(path))) as server:
        ...  # point an OpenAI SDK at f"{server.url}/v1"
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module it lives in
_EXPORTS = {
    # the config file
    "Config": "chain429.config",
    "ConfigError": "chain429.config",
    "ConfigIssue": "chain429.config",
    "load_config": "chain429.config",
    "parse_config_text": "chain429.config",
    "find_config_path": "chain429.config",
    # the server
    "create_app": "chain429.server.app",
    "ServerThread": "chain429.server.serving",
    "serve": "chain429.server.serving",
    "open_request_log": "chain429.server.serving",
    # rate-limit state (another store implements this protocol)
    "StateStore": "chain429.routing.limits",
    "MemoryStateStore": "chain429.routing.memory_store",
    # the request log's records
    "RequestRecord": "chain429.requestlog.records",
    "AttemptRecord": "chain429.requestlog.records",
    # the fake provider
    "FakeProvider": "chain429.fakes.provider",
    "Reply": "chain429.fakes.replies",
    "ReceivedRequest": "chain429.fakes.replies",
}

__all__ = [
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chain429' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # what type checkers and editors see
    from chain429.config import (
        Config,
        ConfigError,
        ConfigIssue,
        find_config_path,
        load_config,
        parse_config_text,
    )
    from chain429.fakes.provider import FakeProvider
    from chain429.fakes.replies import ReceivedRequest, Reply
    from chain429.requestlog.records import AttemptRecord, RequestRecord
    from chain429.routing.limits import StateStore
    from chain429.routing.memory_store import MemoryStateStore
    from chain429.server.app import create_app
    from chain429.server.serving import ServerThread, open_request_log, serve
