"""Write the key tables of docs/config.md from the config models' field descriptions.

Run after changing a field of the config model (chain429/config/):
`python docs/generate_config_docs.py`. Each table sits between
`<!-- generated: NAME ... -->` and `<!-- end generated: NAME -->`; the prose
around them is written by hand and kept. tests/cli/test_docs.py fails when the
file is stale, and a field without a description stops the generator.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from chain429.config.model import (
    Breaker,
    Chain,
    ChainEntry,
    Client,
    Config,
    Price,
    Provider,
    RateLimits,
    Retry,
    Settings,
)

DOC = Path(__file__).with_name("config.md")

# Table name (as the markers say it) -> the model whose fields it lists.
TABLES: dict[str, type[BaseModel]] = {
    "top": Config,
    "settings": Settings,
    "retry": Retry,
    "breaker": Breaker,
    "providers": Provider,
    "rateLimits": RateLimits,
    "price": Price,
    "chains": Chain,
    "entries": ChainEntry,
    "clients": Client,
}
_BLOCK = re.compile(
    r"(<!-- generated: (?P<name>\w+) [^>]*-->\n)(?P<body>.*?)(<!-- end generated: (?P=name) -->)",
    re.DOTALL,
)
_DOC_LINK = re.compile(r"docs/(?P<page>[a-z_]+)\.md(?P<anchor>#[a-z0-9-]+)?")


class UndescribedField(ValueError):
    """A config field with no `Field(description=...)`: it would be an empty row."""


def table(model: type[BaseModel]) -> str:
    """One row per field of `model`, in the model's order: key, default, meaning."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for name, field in model.model_fields.items():
        description = (field.description or "").strip()
        if not description:
            raise UndescribedField(f"{model.__name__}.{name} has no Field(description=...)")
        key = field.alias or name
        rows.append(f"| `{key}` | {default_text(key, field)} | {meaning(description)} |")
    return "\n".join(rows) + "\n"


def default_text(key: str, field: FieldInfo) -> str:
    """The default as the file would spell it, with the unit read out for big numbers."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, BaseModel):
        given = value.model_dump(by_alias=True, exclude_defaults=True)
        if not given:
            return "(all defaults)"
        return "`{" + ", ".join(f"{k}: {v}" for k, v in given.items()) + "}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple | list):
        return "`[]`" if not value else f"`{list(value)}`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    if isinstance(value, int) and value:
        return f"`{value}`{_readable(key, value)}"
    return f"`{value}`"


def _readable(key: str, value: int) -> str:
    if key.endswith("Ms"):
        for unit, size in (("h", 3_600_000), ("min", 60_000), ("s", 1000)):
            if value >= size and value % size == 0:
                return f" ({value // size} {unit})"
    if key.endswith("Bytes"):
        for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value >= size and value % size == 0:
                return f" ({value // size} {unit})"
    return ""


def meaning(description: str) -> str:
    """A description as a table cell: `docs/x.md` becomes a link, `|` cannot end the cell."""
    text = " ".join(description.split()).replace("|", "\\|")
    return _DOC_LINK.sub(
        lambda m: f"[{m['page']}]({m['page']}.md{m['anchor'] or ''})",
        text,
    )


def render(text: str) -> str:
    """`text` (docs/config.md) with every generated table written anew."""
    found: set[str] = set()

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in TABLES:
            raise KeyError(f"docs/config.md has a generated block {name!r}: no such table")
        found.add(name)
        return f"{match[1]}\n{table(TABLES[name])}\n{match[4]}"  # blank lines: a table alone

    rendered = _BLOCK.sub(fill, text)
    missing = sorted(set(TABLES) - found)
    if missing:
        raise KeyError(f"docs/config.md lacks the generated tables {missing}")
    return rendered


if __name__ == "__main__":
    DOC.write_text(render(DOC.read_text()))
    sys.stdout.write(f"wrote {DOC}\n")
