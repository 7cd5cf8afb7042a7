"""JSON from providers: parsed and re-encoded without ever raising.

A provider's body or SSE event is untrusted input. Python's json raises
`ValueError` on junk, but `RecursionError` on deep nesting (100,000 levels of
`[` is 200 KB and fails in under a millisecond), and a `RecursionError` that
escapes turns a provider's junk into our 500. Every parse of provider data goes
through `parse`, every re-encoding of something parsed from a provider through
`encode`, so "malformed" means one thing everywhere: `None`, which the caller
treats like any other answer that is not what it expected.
"""

from __future__ import annotations

import json
from typing import Any

# What a malformed document raises: junk (UnicodeDecodeError is a ValueError), too deep.
MALFORMED = (ValueError, RecursionError)


def parse(data: bytes | bytearray | str) -> Any:
    """The document, or None when it is not JSON (or too deeply nested to parse)."""
    try:
        return json.loads(data)
    except MALFORMED:
        return None


def encode(value: Any) -> bytes | None:
    """`value` as compact-enough JSON bytes, or None when it cannot be encoded.

    Something parsed at the edge of the recursion limit can fail to encode from
    a deeper call stack; the caller then treats it as malformed.
    """
    try:
        return json.dumps(value).encode()
    except (RecursionError, TypeError, ValueError):
        return None
