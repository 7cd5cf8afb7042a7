"""`chain429 config schema`: the JSON Schema an editor checks a config file against.

The schema comes from the CLI as a user gets it, then is used as a YAML
language server uses it: every shipped config and fixture passes, each kind of
mistake is flagged where the loader flags it too, and wherever the schema
takes a `${VAR}` the loader takes it as well. So an editor neither marks a
valid file nor lets through what `chain429 validate` would refuse field by field.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from test_main import run

from chain429.config.errors import ConfigError
from chain429.config.loader import parse_config_text
from chain429.config.model import (
    Breaker,
    Chain,
    ChainEntry,
    Client,
    Config,
    Provider,
    RateLimits,
    Retry,
    Settings,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(
    [*(ROOT / "tests" / "fixtures").glob("*.yaml"), *(ROOT / "examples").glob("*.yaml")]
)
assert len(SHIPPED) >= 4, "the shipped configs moved: point SHIPPED at them"
VALIDATORS = (jsonschema.Draft202012Validator, jsonschema.Draft7Validator)


@pytest.fixture(scope="module")
def printed() -> str:
    result = run("config", "schema")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def schema(printed: str) -> dict[str, Any]:
    return json.loads(printed)


def problems(schema: dict[str, Any], document: Any) -> dict[str, list[str]]:
    """What each validator says about `document`: path -> messages (draft 2020-12, and draft 7
    as the YAML language server reads a schema). An error of `anyOf` (a section or a value
    that may also be null) is the errors of its options, where an editor points."""

    def leaves(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
        return [leaf for child in error.context for leaf in leaves(child)] or [error]

    found: dict[str, list[str]] = {}
    for validator in VALIDATORS:
        for error in validator(schema).iter_errors(document):
            for leaf in leaves(error):
                where = ".".join(str(p) for p in leaf.absolute_path)
                found.setdefault(where, []).append(leaf.message)
    return found


def test_it_prints_a_draft_2020_12_schema_that_also_reads_as_draft_7(schema):
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    for validator in VALIDATORS:
        validator.check_schema(schema)
    assert schema["required"] == ["version"]
    settings = schema["$defs"]["Settings"]["properties"]
    assert settings["port"]["default"] == 3429 and "apiKeys" in settings  # camelCase, as in YAML
    provider_type = schema["$defs"]["Provider"]["properties"]["type"]["anyOf"][0]
    assert {"groq", "openrouter", "generic-openai", "ollama"} <= set(provider_type["enum"])


def test_output_writes_the_same_schema_to_a_file(printed, tmp_path):
    target = tmp_path / "chain429.schema.json"
    result = run("config", "schema", "--output", str(target))
    assert result.returncode == 0 and result.stdout == ""
    assert target.read_text() == printed
    assert f"# yaml-language-server: $schema={target}" in result.stderr
    refused = run("config", "schema", "-o", str(tmp_path))  # a directory
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: cannot write {tmp_path}")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_passes(schema, path):
    assert problems(schema, yaml.safe_load(path.read_text())) == {}


MINIMAL = """\
version: 1
settings:
  port: 3429
providers:
  - {id: p, type: generic-openai, baseUrl: "http://127.0.0.1:9/v1"}
chains:
  - name: c
    entries: [{provider: p, model: m}]
"""


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("port: 3429", "port: abc", "settings.port"),
        ("port: 3429", "port: true", "settings.port"),
        ("port: 3429", "port: 70000", "settings.port"),
        ("port: 3429", "prot: 3429", "settings"),  # a misspelt key
        ("port: 3429", "logLevel: loud", "settings.logLevel"),
        ("port: 3429", "port: ${PORT", "settings.port"),  # not a reference
        ("type: generic-openai", "type: groqq", "providers.0.type"),
        ('baseUrl: "http://127.0.0.1:9/v1"', "paid: true", "providers.0"),  # needs baseUrl
        ("id: p,", "id: p, timeout: 0,", "providers.0.timeout"),
        ("id: p,", "id: p, rateLimits: {requestsPerMinute: 0},", "providers.0.rateLimits"),
        ("entries: [{provider: p, model: m}]", "entries: []", "chains.0.entries"),
        ("model: m", "model: m, paid: 1", "chains.0.entries.0.paid"),
        ("version: 1\n", "", ""),
    ],
)
def test_mistakes_are_flagged_where_the_loader_flags_them(schema, old, new, path):
    assert old in MINIMAL
    text = MINIMAL.replace(old, new)
    flagged = problems(schema, yaml.safe_load(text))
    assert any(where.startswith(path) for where in flagged), flagged
    with pytest.raises(ConfigError) as refused:
        parse_config_text(text, environ={"PORT": "29"})
    dotted = path.replace(".0", "[0]")
    assert any(issue.path.startswith(dotted) for issue in refused.value.issues), refused.value


def test_the_minimal_file_passes_both(schema):
    assert problems(schema, yaml.safe_load(MINIMAL)) == {}
    parse_config_text(MINIMAL, environ={})


# Where each model of the config sits in MINIMAL: the document, and the path to it.
PLACES: dict[str, tuple[str | int, ...]] = {
    "Settings": ("settings",),
    "Provider": ("providers", 0),
    "RateLimits": ("providers", 0, "rateLimits"),
    "Chain": ("chains", 0),
    "ChainEntry": ("chains", 0, "entries", 0),
    "Breaker": ("settings", "breaker"),
    "Retry": ("settings", "retry"),
    "Price": ("providers", 0, "price"),
    "Client": ("clients", 0),
}
# What a section MINIMAL lacks must hold before one key of it is set: its required keys.
SEEDS: dict[str, Any] = {
    "price": {"inputPerMTok": 1, "outputPerMTok": 1},
}
CLIENT = {"name": "c", "key": "${CLIENT_KEY}"}  # a client's key is always a reference
CLIENT_KEY = "a-client-key-0123456789"


def _valid_value(field: dict[str, Any]) -> str:
    """A value the field takes, as the variable would hold it."""
    if "enum" in field:
        return str(field["enum"][-1])
    if field.get("type") == "boolean":
        return "true"
    if "exclusiveMinimum" in field:
        return str(field["exclusiveMinimum"] + 1)
    return str(field.get("minimum", 1))


def _references(schema: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(model, key, a valid value) for every field whose schema takes a `${VAR}`."""
    taken = []
    for model, definition in [("Config", schema), *schema["$defs"].items()]:
        for key, field in definition.get("properties", {}).items():
            options = field.get("anyOf", [field])
            if {"$ref": "#/$defs/Reference"} in options:
                typed = next(o for o in options if o.get("type") not in (None, "null"))
                taken.append((model, key, _valid_value(typed)))
    return taken


def test_a_reference_is_taken_wherever_a_number_flag_or_choice_goes(schema):
    taken = _references(schema)
    keys = {(model, key) for model, key, _ in taken}
    assert {("Settings", "port"), ("Settings", "queueMode"), ("Provider", "type")} <= keys
    assert {("Settings", "logLevel"), ("RateLimits", "tokensPerDay")} <= keys
    assert ("Settings", "host") not in keys and ("Config", "version") not in keys  # text, 1
    for model, key, value in taken:
        document = yaml.safe_load(MINIMAL)
        document["clients"] = [dict(CLIENT)]
        node = document
        for step in PLACES[model]:
            seed = copy.deepcopy(SEEDS.get(step, {})) if isinstance(step, str) else None
            node = node.setdefault(step, seed) if isinstance(step, str) else node[step]
        node[key] = "${X}"
        assert problems(schema, document) == {}, (model, key)
        text = yaml.safe_dump(document)
        environ = {"X": value, "CLIENT_KEY": CLIENT_KEY}
        loaded = parse_config_text(text, environ=environ)  # what the schema promised
        assert loaded.version == 1, (model, key)


@pytest.mark.parametrize(
    ("value", "environ", "port"),
    [("${PORT:-3430}", {}, 3430), ("34${PORT}", {"PORT": "31"}, 3431)],
)
def test_a_value_with_a_reference_is_left_to_the_loader(schema, value, environ, port):
    text = MINIMAL.replace("port: 3429", f"port: {value}")
    assert problems(schema, yaml.safe_load(text)) == {}
    assert parse_config_text(text, environ=environ).settings.port == port


def test_every_field_is_described_in_the_models_and_the_schema(schema):
    for model in (
        Config,
        Settings,
        Provider,
        RateLimits,
        Chain,
        ChainEntry,
        Retry,
        Breaker,
        Client,
    ):
        for name, field in model.model_fields.items():
            assert (field.description or "").strip(), f"{model.__name__}.{name}"
    for definition in [schema, *schema["$defs"].values()]:
        for key, field in definition.get("properties", {}).items():
            assert field.get("description"), key
