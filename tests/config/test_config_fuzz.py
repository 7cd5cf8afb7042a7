"""The config loader and the round-trip editor, fuzzed: a ConfigError, never a traceback.

`chain429 validate`, hot reload and the admin API all read text a person (or
a fuzzer) wrote. Whatever the text, the answer must be "ok" or a list of
problems with file and line — a crash would show a traceback in `validate`,
a 500 in the API, or a reload failure with no `config_error`.
"""

from __future__ import annotations

import string
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain429.config.errors import ConfigError
from chain429.config.loader import parse_config_text
from chain429.config.model import Config
from chain429.config.writer import ConfigDocument, ConfigEditError

FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

KEYS = [
    "version", "settings", "providers", "chains", "id", "type", "apiKey", "baseUrl", "name",
    "entries", "provider", "model", "rateLimits", "requestsPerMinute", "port", "apiKeys",
    "adminKeys", "defaultChain", "headers", "paid", "timeout", "corsOrigins", "allowedHosts",
    "allowPrivateUpstreams", "queueMode", "<<", "&a", "*a",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(
        ["${A_API_KEY}", "${", "$${X}", "${X:-d}", "groq", "generic-openai", "http://h/v1",
         "http://169.254.169.254", "*", "1", "yes", "~", "\x07", "\u2028"]
    ),
)  # fmt: skip
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


def check(text: str) -> None:
    try:
        config = parse_config_text(text, filename="fuzz.yaml", environ={"A_API_KEY": "k"})
    except ConfigError as err:
        assert err.issues, "a ConfigError names at least one problem"
        for issue in err.issues:
            assert issue.message and (issue.line is None or issue.line >= 1)
    else:
        assert isinstance(config, Config)
    try:
        document = ConfigDocument.from_text(text)
        document.raw()
        document.masked()
    except ConfigEditError:
        pass


@FUZZ
@given(DOCUMENTS)
def test_any_yaml_document_loads_or_is_a_config_error(data: Any) -> None:
    check(yaml.safe_dump({"version": 1, "x": data} if isinstance(data, dict) else data))


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), DOCUMENTS, max_size=6))
def test_config_shaped_documents_load_or_are_config_errors(data: dict[str, Any]) -> None:
    check(yaml.safe_dump({"version": 1, **data}, allow_unicode=True))


@FUZZ
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_any_text_loads_or_is_a_config_error(text: str) -> None:
    check(text)


VALID = """\
version: 1
settings:
  apiKeys: ["${A_API_KEY}"]
providers:
  - id: a
    type: generic-openai
    baseUrl: http://127.0.0.1:9/v1
chains:
  - name: main
    entries:
      - {provider: a, model: m}
"""


@FUZZ
@given(
    st.integers(min_value=0, max_value=len(VALID)),
    st.text(alphabet=string.printable + "\x00\x07\x1b\x7f\u2028\ufeff{}[]&*!|>%@`", max_size=8),
)
def test_a_valid_file_with_a_splice_loads_or_is_a_config_error(at: int, splice: str) -> None:
    """Typos land anywhere: in keys, in indentation, inside quotes."""
    check(VALID[:at] + splice + VALID[at:])


def test_a_mapping_used_as_a_key_is_a_config_error():
    """Found by the splice test: YAML lets a mapping be a key (`{a: 1}: x`)."""
    check("version: 1\n{a: 1}: x\n")
    check("version: 1\n? [a, b]\n: x\n")
