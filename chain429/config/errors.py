"""Config problems as a user reads them: file, line, field path, plain message.

The loader turns YAML errors, unset variables, pydantic errors and cross-field
checks into `ConfigIssue`s, so a bad config is always reported the same way and
never as a traceback. Paths use the YAML's own camelCase spelling
(`chains[0].entries[2].model`) because that is what the user has to find.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

Loc = tuple[str | int, ...]

# Values under these keys are secrets: an error message must not echo them,
# because error messages end up in logs and terminals.
_SECRET_KEYS = frozenset({"apiKey", "apiKeys", "adminKeys", "headers", "databaseUrl"})

# Custom validators put this key in the error context to point the error at a
# field of the model rather than the model itself (pydantic's loc stops there).
FIELD_CTX = "chain429_field"


@dataclass(frozen=True)
class ConfigIssue:
    file: str | None
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
        elif self.line is not None:
            where = f"line {self.line}"
        parts = [p for p in (where, self.path) if p]
        return ": ".join([*parts, self.message])


class ConfigError(Exception):
    """A config that cannot be used; `issues` lists every problem found."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


def format_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def line_for(loc: Loc, lines: Mapping[Loc, int]) -> int | None:
    """Line of the deepest known node on `loc`: a missing key points at its parent."""
    for end in range(len(loc), -1, -1):
        line = lines.get(loc[:end])
        if line is not None:
            return line
    return None


def describe(value: Any, loc: Sequence[str | int] = ()) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if any(part in _SECRET_KEYS for part in loc):
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType, tuple):
        for arg in get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue  # an index into a tuple of models keeps the same model
        for name, field in model.model_fields.items():
            if part in (name, field.alias):
                model = _model_in(field.annotation)
                break
        else:
            return None
    return model


def _unknown_key(root: type[BaseModel], loc: Loc) -> str:
    key = loc[-1]
    message = f"unknown key {key!r}"
    model = _model_at(root, loc[:-1])
    if model is not None and isinstance(key, str):
        known = [f.alias or n for n, f in model.model_fields.items()]
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        if close:
            message += f" (did you mean {close[0]!r}?)"
    return message


_TYPE_MESSAGES = {
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "string_type": "expected a string",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
}


def pydantic_message(
    error: Mapping[str, Any], root: type[BaseModel], *, hide_value: bool = False
) -> tuple[Loc, str]:
    """Translate one entry of `ValidationError.errors()` into (loc, message).

    `hide_value`: the value came from a `${VAR}` and may be a secret, so the
    message names its type only, and a validator's own words lose it too.
    """
    loc, message = _message(error, root, hide_value)
    value = error.get("input")
    if hide_value and isinstance(value, str) and len(value) > 1:
        message = message.replace(repr(value), "(the value)").replace(value, "(the value)")
    return loc, message


def _message(error: Mapping[str, Any], root: type[BaseModel], hide_value: bool) -> tuple[Loc, str]:
    kind = error["type"]
    loc: Loc = tuple(p for p in error["loc"] if p != "[key]")
    ctx = error.get("ctx") or {}
    value = error.get("input")
    shown = f"a {type(value).__name__} from an environment variable" if hide_value else None
    got = f" (got {shown or describe(value, loc)})"
    if kind == "extra_forbidden":
        return loc, _unknown_key(root, loc)
    if kind == "missing":
        return loc, f"missing required key {loc[-1]!r}" if loc else "missing"
    if kind in _TYPE_MESSAGES:
        return loc, _TYPE_MESSAGES[kind] + got
    if kind in ("too_short", "string_too_short") and ctx.get("min_length") == 1:
        return loc, "must not be empty"
    if kind == "literal_error":
        return loc, f"must be one of {ctx.get('expected')}{got}"
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("greater than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return loc, f"must be {words} {ctx.get(key)}{got}"
    if kind == "value_error" and "error" in ctx:
        return loc, str(ctx["error"])
    if FIELD_CTX in ctx:
        return (*loc, ctx[FIELD_CTX]), str(error["msg"])
    msg = str(error["msg"])
    return loc, msg[:1].lower() + msg[1:]
