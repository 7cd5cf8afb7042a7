"""The config models as JSON Schema: for editors (the file's schema) and for the admin API.

`file_schema()` is what `chain429 config schema` prints and what a YAML
language server checks a config file against while it is typed (docs/config.md
says how to point one at it): completion of keys, each field's description
and default on hover, and errors before `chain429 validate` would say them.

It is the model's own schema (pydantic's, draft 2020-12, keys camelCase as in
YAML), plus what a *file* may say that the model never sees, because the
loader stands between them (chain429.config.loader):

- a number, flag or choice may be written with a `${VAR}` reference
  (`port: ${PORT}`): the loader replaces it before the model validates, so
  only the loader can judge the value;
- `version` is required (the loader asks for it; the model defaults it);
- `baseUrl` is required for a provider type without a default URL (the
  model checks that in a validator, which JSON Schema cannot see).

Only keywords that read the same in draft 7 are used (`$defs` is reached by
JSON pointer), since the YAML language server implements draft 7 in full and
later drafts in part.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import DEFAULT_REF_TEMPLATE, GenerateJsonSchema

from chain429.config.loader import HOLDS_REFERENCE
from chain429.config.model import Config
from chain429.upstream.presets import PRESETS, PROVIDER_TYPES

__all__ = ["DIALECT", "file_schema", "model_schema"]

Schema = dict[str, Any]

DIALECT = "https://json-schema.org/draft/2020-12/schema"

# A value the model takes only after the loader has replaced the reference in it.
_REFERENCE: Schema = {
    "type": "string",
    "pattern": HOLDS_REFERENCE,
    "description": "Holds a `${VAR}` or `${VAR:-default}` reference: the variable's value "
    "(from the environment, or the .env beside the file) replaces it when the file is loaded.",
}
_REFERENCE_REF: Schema = {"$ref": "#/$defs/Reference"}
# What a field says about itself, as opposed to what it allows: kept on the field
# when its type becomes "this, or a reference".
_ANNOTATIONS = ("title", "description", "default", "examples", "deprecated")


class _Untitled(GenerateJsonSchema):
    """No `title` per field: pydantic's would be the key run together ("Apikeys"), and the
    description says more. A model keeps its title (its class name)."""

    def field_title_should_be_set(self, schema: Any) -> bool:  # pydantic's type is private
        return False


def model_schema(model: type[BaseModel], ref_template: str = DEFAULT_REF_TEMPLATE) -> Schema:
    """A config model's JSON Schema as YAML spells it: camelCase keys, each field's
    description and default; its sub-models are under `$defs`."""
    return model.model_json_schema(
        by_alias=True, ref_template=ref_template, schema_generator=_Untitled
    )


def file_schema() -> Schema:
    """The JSON Schema of a config file (see the module docstring for what it adds)."""
    schema = model_schema(Config)
    defs: Schema = schema.pop("$defs")
    for found in (schema, *defs.values()):
        _allow_references(found)
    schema["required"] = ["version", *schema.get("required", ())]
    without_url = [t for t in PROVIDER_TYPES if PRESETS[t].default_base_url is None]
    defs["Provider"]["allOf"] = [
        {
            "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
            "then": {"required": ["baseUrl"]},
        }
        for name in without_url
    ]
    defs["Reference"] = copy.deepcopy(_REFERENCE)
    return {
        "$schema": DIALECT,
        "title": "chain429 config file",
        **{key: value for key, value in schema.items() if key != "title"},
        "$defs": defs,
    }


def _allow_references(schema: Schema) -> None:
    """Let each number, flag and choice among an object's properties be a reference."""
    for name, field in schema.get("properties", {}).items():
        schema["properties"][name] = _or_reference(field)


def _or_reference(field: Schema) -> Schema:
    if "anyOf" in field:  # an optional value: `{"anyOf": [{"type": "integer"}, {"type": "null"}]}`
        options = list(field["anyOf"])
        if any(_takes_reference(option) for option in options):
            options.append(dict(_REFERENCE_REF))
        return {**field, "anyOf": options}
    if _takes_reference(field):
        kept = {key: value for key, value in field.items() if key in _ANNOTATIONS}
        own = {key: value for key, value in field.items() if key not in _ANNOTATIONS}
        return {**kept, "anyOf": [own, dict(_REFERENCE_REF)]}
    return field


def _takes_reference(field: Schema) -> bool:
    """A value a bare string would not satisfy: a number, a flag, one of a set of words.

    Not a constant (`version: 1`): the model takes no string for it, substituted or not.
    """
    if "const" in field:
        return False
    kind = field.get("type")
    return kind in ("integer", "number", "boolean") or (kind == "string" and "enum" in field)
