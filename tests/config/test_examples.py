"""The shipped example configs load, given the keys they reference."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chain429.config.errors import ConfigError
from chain429.config.loader import load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads_with_its_keys_set(path):
    names = set(re.findall(r"\$\{([A-Z0-9_]+)\}", path.read_text()))
    assert names, "an example keeps its keys in ${VAR} references"
    config = load_config(path, environ={name: f"value-of-{name}" for name in names})
    assert config.chains
    assert config.settings.default_chain in {chain.name for chain in config.chains}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_without_keys_names_the_missing_variables(path):
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert any("CHAIN429_API_KEY" in issue.message for issue in caught.value.issues)
