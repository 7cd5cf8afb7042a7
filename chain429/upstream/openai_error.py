"""OpenAI's error shape: what providers answer with, and what chain429 answers with.

`{"error": {"message", "type", "param", "code"}}` is what every OpenAI SDK
turns into its exception classes, so every error chain429 sends, as an HTTP
body (the server's `ApiError`, the router's 503) or as a stream's final event,
is built here.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["error_body", "error_object"]


def error_object(
    message: str,
    error_type: str = "server_error",
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """The inner object: `{"message", "type", "param", "code"}`."""
    return {"message": message, "type": error_type, "param": param, "code": code}


def error_body(
    message: str,
    error_type: str = "server_error",
    code: str | None = None,
    param: str | None = None,
) -> bytes:
    """A whole error as JSON bytes: `{"error": {...}}`."""
    return json.dumps({"error": error_object(message, error_type, code, param)}).encode()
