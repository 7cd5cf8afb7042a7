"""docs/cli.md is the commands' own --help text, kept current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_cli_docs_match_help_output():
    spec = importlib.util.spec_from_file_location("gen", DOCS / "generate_cli_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (DOCS / "cli.md").read_text() == module.render(), (
        "docs/cli.md is stale: run python docs/generate_cli_docs.py"
    )
