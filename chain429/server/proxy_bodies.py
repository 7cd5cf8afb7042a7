"""The bodies of the proxied routes, checked before any provider is asked.

Each route's JSON is checked enough that no provider is asked with junk and
that what chain429 itself reads (the `model`, `stream`, the token counts a
quota reservation is sized by) has the type it expects; everything else is
the provider's to check, and goes upstream as it came. A bad body is a 400
in OpenAI's shape naming the field (`param`).

- `/v1/chat/completions`: `messages`, a non-empty list of objects with a `role`;
- `/v1/completions`: `prompt`, a string, a list of strings, a list of token ids,
  or a list of lists of token ids;
- `/v1/embeddings`: `input`, the same shapes as `prompt`, never empty;
  `encoding_format` `float` or `base64`; `dimensions` a positive whole number.
"""

from __future__ import annotations

import json
from typing import Any

from chain429.routing.endpoints import ROUTE, Endpoint
from chain429.server.errors import ApiError

__all__ = ["MAX_TOKENS", "parse_chat_request", "parse_request"]

# No model writes a million tokens in one answer; anything above is a mistake.
MAX_TOKENS = 1_000_000


def _json_object(body: bytes, endpoint: Endpoint) -> dict[str, Any]:
    if not body:
        raise ApiError(
            400, f"The request body is empty; send a JSON request for {ROUTE[endpoint]}."
        )
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "The request body is nested too deeply.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return data


def _check_common(data: dict[str, Any]) -> None:
    """What every route's body shares: `model`, and for the completions `stream`,
    `stream_options` and the completion's size."""
    if "model" in data and not isinstance(data["model"], str):
        raise ApiError(400, "'model' must be a string.", param="model")
    options = data.get("stream_options")
    if options is not None and not (
        isinstance(options, dict) and isinstance(options.get("include_usage", False), bool)
    ):
        raise ApiError(
            400,
            "'stream_options' must be an object whose 'include_usage' is true or false.",
            param="stream_options",
        )
    if "stream" in data and not isinstance(data["stream"], bool | None):
        raise ApiError(400, "'stream' must be true or false.", param="stream")
    for name in ("max_tokens", "max_completion_tokens"):
        value = data.get(name)
        # They size the token reservation of every quota the request draws on:
        # a negative one would hand quota back, a huge one block a window.
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if value is not None and (
            not whole or isinstance(value, bool) or not 1 <= value <= MAX_TOKENS
        ):
            raise ApiError(
                400, f"'{name}' must be a whole number from 1 to {MAX_TOKENS}.", param=name
            )


def parse_chat_request(body: bytes) -> dict[str, Any]:
    """A chat completion request, checked."""
    data = _json_object(body, Endpoint.CHAT)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list.", param="messages")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(
                400, "Each item of 'messages' must be an object with a 'role'.", param="messages"
            )
        if not isinstance(message.get("content"), str | list | None):
            raise ApiError(
                400, "A message's 'content' must be a string or a list of parts.", param="messages"
            )
        if not isinstance(message.get("tool_calls", []), list):
            raise ApiError(400, "A message's 'tool_calls' must be a list.", param="messages")
    _check_common(data)
    tools = data.get("tools")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(tool, dict) for tool in tools)
    ):
        raise ApiError(400, "'tools' must be a list of objects.", param="tools")
    return data


def _token_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _text_or_tokens(value: object, *, empty_ok: bool) -> bool:
    """A string, a list of strings, a list of token ids, or a list of lists of token ids
    (what OpenAI takes as a completion's `prompt` and an embedding's `input`)."""
    if isinstance(value, str):
        return empty_ok or bool(value)
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(item, str) and (empty_ok or item) for item in value):
        return True
    if all(_token_id(item) for item in value):
        return True
    return all(
        isinstance(item, list) and item and all(_token_id(t) for t in item) for item in value
    )


_SHAPES = "a string, a list of strings, a list of token ids or a list of lists of token ids"


def parse_completion_request(body: bytes) -> dict[str, Any]:
    """A legacy text completion request, checked."""
    data = _json_object(body, Endpoint.COMPLETIONS)
    if "prompt" not in data or not _text_or_tokens(data["prompt"], empty_ok=True):
        raise ApiError(400, f"'prompt' must be {_SHAPES}.", param="prompt")
    _check_common(data)
    return data


def parse_embeddings_request(body: bytes) -> dict[str, Any]:
    """An embeddings request, checked."""
    data = _json_object(body, Endpoint.EMBEDDINGS)
    if "input" not in data or not _text_or_tokens(data["input"], empty_ok=False):
        raise ApiError(400, f"'input' must be {_SHAPES}, none of them empty.", param="input")
    if "model" in data and not isinstance(data["model"], str):
        raise ApiError(400, "'model' must be a string.", param="model")
    encoding = data.get("encoding_format")
    if encoding is not None and encoding not in ("float", "base64"):
        raise ApiError(
            400, "'encoding_format' must be 'float' or 'base64'.", param="encoding_format"
        )
    dimensions = data.get("dimensions")
    if dimensions is not None and not (_token_id(dimensions) and dimensions >= 1):
        raise ApiError(400, "'dimensions' must be a whole number from 1.", param="dimensions")
    return data


_PARSERS = {
    Endpoint.CHAT: parse_chat_request,
    Endpoint.COMPLETIONS: parse_completion_request,
    Endpoint.EMBEDDINGS: parse_embeddings_request,
}


def parse_request(endpoint: Endpoint, body: bytes) -> dict[str, Any]:
    """The client's JSON for `endpoint`, checked enough that no provider is asked with junk."""
    return _PARSERS[endpoint](body)
