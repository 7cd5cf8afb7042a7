"""How many tokens a request will cost, and cost, when no provider said so.

One estimate, for the places that need one: the reservation a request
makes against token quotas before it is sent (so a `tokensPerMinute` window
is not overrun by requests in flight), the cost a paid call holds against a
paid budget before it is sent (chain429.routing.budget), and the request
log's count when a provider's answer carried no `usage` (marked
`tokens_estimated`). About four
characters a token is what OpenAI's own guidance says for English text; it
is an estimate and says so wherever it is shown.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "CHARS_PER_TOKEN",
    "UNSTATED_COMPLETION_TOKENS",
    "asked_completion",
    "prompt_tokens",
    "reservation",
    "spend_estimate",
    "text_tokens",
]

CHARS_PER_TOKEN = 4
# The completion a paid call is assumed to cost when the request sets no
# `max_tokens`: most chat answers are shorter (docs/spend.md). A request that
# sets one is held to it, which the provider enforces.
UNSTATED_COMPLETION_TOKENS = 1000


def text_tokens(chars: int) -> int:
    """The tokens `chars` characters of text are about."""
    return chars // CHARS_PER_TOKEN


def _text_of(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # parts: the text ones count, images and audio do not
        return sum(
            len(part["text"])
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return 0


def prompt_tokens(messages: Iterable[Any]) -> int:
    """The tokens a request's messages are about (at least 1)."""
    chars = sum(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
    return max(1, text_tokens(chars))


def asked_completion(request: dict[str, Any]) -> int:
    """The completion tokens the request allows (`max_completion_tokens`, `max_tokens`), or 0."""
    completion = request.get("max_completion_tokens") or request.get("max_tokens") or 0
    return int(completion) if isinstance(completion, int | float) else 0


def reservation(request: dict[str, Any]) -> int:
    """What a request will cost a token quota: its prompt, plus the completion it may
    ask for, which providers such as Cerebras count up front."""
    return prompt_tokens(request["messages"]) + asked_completion(request)


def spend_estimate(request: dict[str, Any]) -> tuple[int, int]:
    """(prompt, completion) tokens a paid call is held to before it is sent: the prompt's
    estimate, and the completion it allows, else `UNSTATED_COMPLETION_TOKENS`."""
    return (
        prompt_tokens(request["messages"]),
        asked_completion(request) or UNSTATED_COMPLETION_TOKENS,
    )
