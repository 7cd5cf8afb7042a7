"""The config models' base class and the field types every section shares.

Kept apart from chain429.config.model so that sections declared in their own
module (chain429.config.failover) use the same base and the same leniency
rules without importing the whole model.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = ["Count", "Flag", "Model", "PositiveCount", "reject_bool"]


def _no_number(value: Any) -> Any:
    # `paid: 1` is a typo or a JSON client's mistake; a string (from a ${VAR},
    # or YAML's own yes/no) is still read the lenient way.
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"expected true or false (got {value!r})")
    return value


def reject_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number (got {str(value).lower()})")
    return value


# Lenient about strings, since `${VAR}` always yields one, but not about
# numbers for flags or flags for numbers.
Flag = Annotated[bool, BeforeValidator(_no_number)]
Count = Annotated[int, BeforeValidator(reject_bool)]

# A Count of at least 1, for optional limits. `Field(ge=1)` on `Count | None`
# would bind to the union, where JSON Schema has no word for it; on the number
# (inside the validator) it reads `minimum: 1` in the schema.
PositiveCount = Annotated[int, Field(ge=1), BeforeValidator(reject_bool)]


class Model(BaseModel):
    """Frozen (a config is an immutable snapshot), strict about unknown keys, camelCase."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, alias_generator=to_camel
    )
