"""Every CLI test starts from an environment without keys, servers or contexts of the machine's."""

from __future__ import annotations

import pytest

from chain429.cli import wizard
from fixtures.cli_edits import ISOLATE, KEY_VARS


@pytest.fixture(autouse=True)
def _clean_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [*KEY_VARS, *ISOLATE, wizard.PROXY_KEY_VAR]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CHAIN429_CONFIG_DIR", str(tmp_path_factory.mktemp("contexts")))
