"""How many tokens a request will cost, and cost, when no provider said so.

One estimate, for the places that need one: the reservation a request
makes against token quotas before it is sent (so a `tokensPerMinute` window
is not overrun by requests in flight), the cost a paid call holds against a
paid budget before it is sent (chain429.routing.budget), and the request
log's count when a provider's answer carried no `usage` (marked
`tokens_estimated`). About four
characters a token is what OpenAI's own guidance says for English text, and a
chat's prompt adds what the provider puts around its messages; it is an
estimate and says so wherever it is shown.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "CHARS_PER_TOKEN",
    "TOKENS_PER_CHAT",
    "TOKENS_PER_MESSAGE",
    "UNSTATED_COMPLETION_TOKENS",
    "asked_completion",
    "input_tokens",
    "prompt_tokens",
    "reservation",
    "text_tokens",
]

CHARS_PER_TOKEN = 4
# What a provider counts in a chat request's prompt beyond the messages' text: its
# chat template's markers around each message (OpenAI's guidance counts 3 a message
# and 3 to prime the answer) and, on some providers, a system prompt of its own
# (Groq's Llama models add one of about 30 tokens). Without them a short prompt's
# estimate is a fraction of what the provider bills, and a burst of short paid calls
# held at their estimates would overrun a paid budget together.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_CHAT = 32
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
    """The prompt tokens a chat request's messages are about: their text, and what the
    provider adds around them (TOKENS_PER_MESSAGE, TOKENS_PER_CHAT)."""
    chars = count = 0
    for message in messages:
        if isinstance(message, dict):
            chars += _text_of(message.get("content"))
            count += 1
    return text_tokens(chars) + TOKENS_PER_MESSAGE * count + TOKENS_PER_CHAT


def input_tokens(value: Any) -> int:
    """The tokens a legacy completion's `prompt` or an embedding's `input` is about (at
    least 1): text by its characters, a list of token ids one token each."""
    items = value if isinstance(value, list) else [value]
    chars = ids = 0
    for item in items:
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, int):
            ids += 1
        elif isinstance(item, list):
            ids += len(item)
    return max(1, text_tokens(chars) + ids)


def asked_completion(request: dict[str, Any]) -> int:
    """The completion tokens the request allows (`max_completion_tokens`, `max_tokens`), or 0."""
    completion = request.get("max_completion_tokens") or request.get("max_tokens") or 0
    return int(completion) if isinstance(completion, int | float) else 0


def reservation(request: dict[str, Any], prompt: int | None = None) -> int:
    """What a request will cost a token quota: its prompt (`prompt` tokens, or its chat
    messages'), plus the completion it may ask for, which providers such as Cerebras
    count up front."""
    if prompt is None:
        prompt = prompt_tokens(request["messages"])
    return prompt + asked_completion(request)
