"""The proxied endpoints, and what differs between them for the one waterfall.

chain429 proxies three OpenAI routes through its chains: chat completions,
the legacy text completions and embeddings. The walk, the limits, the trace
and the request log are the same for all three (chain429.routing.router);
what the walk must know about the route a request came in on lives here,
in one place:

- the path the provider is asked at, after its base URL;
- the kind of chain that serves it (`Chain.kind`): a chat chain serves chat
  and legacy completions (the same models, the same quotas), an embeddings
  chain serves embeddings;
- what a successful answer looks like (a 2xx that is not one is
  `invalid_body`, and the next entry is tried);
- how many tokens a request is about, when no provider said so (the quota
  reservation, and the request log's estimate), and the text of an answer
  (its estimated completion tokens).

What an upstream answer *means* for each endpoint (a 404 from a provider
without `/completions`, say) is chain429.routing.outcome's, like every other
rule about falling through.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from chain429.config.model import ChainKind
from chain429.routing import tokens
from chain429.upstream import provider_json

__all__ = [
    "CHAIN_KIND",
    "ROUTE",
    "UPSTREAM_PATH",
    "Endpoint",
    "answer_text",
    "count_tokens",
    "is_answer",
    "prompt_tokens",
    "reservation",
    "serving",
]


class Endpoint(StrEnum):
    """A proxied route, by the name the request log and the stats give it."""

    CHAT = "chat"  # POST /v1/chat/completions
    COMPLETIONS = "completions"  # POST /v1/completions (legacy text completions)
    EMBEDDINGS = "embeddings"  # POST /v1/embeddings


# The client's route, as errors and docs name it.
ROUTE: dict[Endpoint, str] = {
    Endpoint.CHAT: "/v1/chat/completions",
    Endpoint.COMPLETIONS: "/v1/completions",
    Endpoint.EMBEDDINGS: "/v1/embeddings",
}
# Where the provider is asked, after its base URL (which ends at `/v1`).
UPSTREAM_PATH: dict[Endpoint, str] = {
    Endpoint.CHAT: "/chat/completions",
    Endpoint.COMPLETIONS: "/completions",
    Endpoint.EMBEDDINGS: "/embeddings",
}
# The chains that serve each endpoint. Legacy completions go to chat chains:
# the providers that still serve `/completions` serve it for their chat models.
CHAIN_KIND: dict[Endpoint, ChainKind] = {
    Endpoint.CHAT: "chat",
    Endpoint.COMPLETIONS: "chat",
    Endpoint.EMBEDDINGS: "embeddings",
}


def serving(kind: ChainKind) -> tuple[Endpoint, ...]:
    """The endpoints a chain of this kind serves."""
    return tuple(endpoint for endpoint, chain_kind in CHAIN_KIND.items() if chain_kind == kind)


def is_answer(endpoint: Endpoint, data: object) -> bool:
    """Whether a parsed 2xx body is what this endpoint answers: a completion's
    `choices` (chat and legacy alike), an embedding list's `data`."""
    if not isinstance(data, dict) or "error" in data:
        return False
    if endpoint is Endpoint.EMBEDDINGS:
        return isinstance(data.get("data"), list)
    return isinstance(data.get("choices"), list)


def prompt_tokens(endpoint: Endpoint, request: dict[str, Any]) -> int:
    """The tokens a request's prompt is about: its messages, its `prompt`, its `input`."""
    if endpoint is Endpoint.CHAT:
        return tokens.prompt_tokens(request.get("messages") or ())
    return tokens.input_tokens(
        request.get("prompt" if endpoint is Endpoint.COMPLETIONS else "input")
    )


def reservation(endpoint: Endpoint, request: dict[str, Any]) -> int:
    """What the request will cost a token quota (chain429.routing.tokens.reservation)."""
    return tokens.reservation(request, prompt_tokens(endpoint, request))


def spend_estimate(endpoint: Endpoint, request: dict[str, Any]) -> tuple[int, int]:
    """(prompt, completion) tokens a paid call is held to before it is sent: the prompt's
    estimate, and the completion it allows, else `tokens.UNSTATED_COMPLETION_TOKENS`
    (an embedding has no completion)."""
    if endpoint is Endpoint.EMBEDDINGS:
        return prompt_tokens(endpoint, request), 0
    completion = tokens.asked_completion(request) or tokens.UNSTATED_COMPLETION_TOKENS
    return prompt_tokens(endpoint, request), completion


def answer_text(endpoint: Endpoint, data: object) -> str:
    """The text an answer carries (what its completion tokens are estimated from);
    an embedding carries none."""
    if endpoint is Endpoint.EMBEDDINGS or not isinstance(data, dict):
        return ""
    parts = []
    for choice in data.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if endpoint is Endpoint.COMPLETIONS:
            text = choice.get("text")
        else:
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else None
        if isinstance(text, str):
            parts.append(text)
    return "".join(parts)


_PROMPT_TOKENS = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')


def count_tokens(endpoint: Endpoint, request: dict[str, Any], body: bytes) -> tuple[int, int, bool]:
    """(prompt, completion, estimated) for a successful answer's body.

    From the provider's `usage` when it has one (an embedding's has no
    completion tokens: 0); else estimated (chain429.routing.tokens), and said so.
    """
    # A regex, not a parse: the success body is relayed as it came, never decoded.
    prompt = _PROMPT_TOKENS.search(body)
    completion = _COMPLETION_TOKENS.search(body)
    if prompt and (completion or endpoint is Endpoint.EMBEDDINGS):
        return int(prompt[1]), int(completion[1]) if completion else 0, False
    text = (
        "" if endpoint is Endpoint.EMBEDDINGS else answer_text(endpoint, provider_json.parse(body))
    )
    return prompt_tokens(endpoint, request), tokens.text_tokens(len(text)), True
