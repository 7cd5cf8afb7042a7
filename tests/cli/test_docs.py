"""docs/cli.md is the commands' own --help text, and docs/config.md's key tables the config
models' own descriptions, kept current."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel, Field

DOCS = Path(__file__).resolve().parents[2] / "docs"


def generator(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_docs_match_help_output():
    module = generator("generate_cli_docs")
    assert (DOCS / "cli.md").read_text() == module.render(), (
        "docs/cli.md is stale: run python docs/generate_cli_docs.py"
    )


def test_config_docs_match_the_models():
    module = generator("generate_config_docs")
    text = (DOCS / "config.md").read_text()
    assert text == module.render(text), (
        "docs/config.md is stale: run python docs/generate_config_docs.py"
    )


def test_every_config_field_has_a_row_with_its_meaning():
    module = generator("generate_config_docs")
    text = (DOCS / "config.md").read_text()
    for name, model in module.TABLES.items():
        block = re.search(
            rf"<!-- generated: {name} .*?-->(.*?)<!-- end generated: {name} -->", text, re.DOTALL
        )
        assert block, name
        rows = dict(re.findall(r"^\| `(\w+)` \| [^|]+ \| (.+) \|$", block[1], re.MULTILINE))
        keys = [field.alias or key for key, field in model.model_fields.items()]
        assert list(rows) == keys, name
        assert all(len(meaning) > 10 for meaning in rows.values()), name


def test_a_field_without_a_description_stops_the_generator():
    module = generator("generate_config_docs")

    class Described(BaseModel):
        port: int = Field(default=1, description="Port.")
        host: str = "x"

    with pytest.raises(module.UndescribedField, match=r"Described\.host"):
        module.table(Described)
