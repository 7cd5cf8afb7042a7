"""Provider presets: what a provider `type` implies.

A preset is the one place that knows a provider family: its default base
URL, its rate-limit dialect (an object of `chain429.upstream.dialects`, held
by reference), where its quotas live, and what its API accepts. Adding a
provider type is adding one preset here.
"""

from __future__ import annotations

from dataclasses import dataclass

from chain429.upstream import dialects
from chain429.upstream.dialects import Dialect


@dataclass(frozen=True)
class Preset:
    type: str
    default_base_url: str | None
    # How its headers and 429 bodies report quotas.
    dialect: Dialect = dialects.GENERIC
    # Where the provider enforces its quotas: per "model" of an account, or the
    # whole "account". OpenRouter is per model, except that all `:free` models
    # share one account-wide quota ("free").
    quota_scope: str = "model"
    # Whether the provider accepts stream_options.include_usage on streams;
    # where it does, chain429 asks for usage even when the client did not.
    supports_stream_usage: bool = False
    # Servers on the user's own machine take no key: `provider add` writes no
    # apiKey for them, and a provider without one is sent no Authorization.
    needs_key: bool = True
    # Embedding models it is known to serve on `/embeddings`, the usual one
    # first: what the CLI offers for a chain of kind `embeddings`. Short on
    # purpose (a hint, not a catalogue); any other model name works too.
    embedding_models: tuple[str, ...] = ()


PRESETS: dict[str, Preset] = {
    preset.type: preset
    for preset in (
        Preset(
            "openrouter",
            "https://openrouter.ai/api/v1",
            dialects.OPENROUTER,
            supports_stream_usage=True,
            quota_scope="free",
        ),
        Preset("groq", "https://api.groq.com/openai/v1", dialects.GROQ, supports_stream_usage=True),
        Preset(
            "cerebras", "https://api.cerebras.ai/v1", dialects.CEREBRAS, supports_stream_usage=True
        ),
        Preset(
            "openai",
            "https://api.openai.com/v1",
            dialects.OPENAI,
            supports_stream_usage=True,
            embedding_models=("text-embedding-3-small", "text-embedding-3-large"),
        ),
        # Gemini's OpenAI-compatible endpoint.
        Preset(
            "google-ai",
            "https://generativelanguage.googleapis.com/v1beta/openai",
            dialects.GOOGLE_AI,
            supports_stream_usage=True,
            embedding_models=("gemini-embedding-001", "text-embedding-004"),
        ),
        # Mistral reports usage on its last chunk unasked and has no stream_options.
        # All keys of a Mistral workspace share its limits (unverified upstream).
        Preset(
            "mistral",
            "https://api.mistral.ai/v1",
            dialects.MISTRAL,
            quota_scope="account",
            embedding_models=("mistral-embed",),
        ),
        # Anything else that speaks OpenAI's API: the config must give baseUrl.
        # Unknown servers may reject unknown fields, so nothing extra is sent.
        Preset("generic-openai", None),
        # Local model servers at their default addresses (the OpenAI-compatible
        # endpoints of Ollama and LM Studio): no key, and like generic-openai
        # otherwise, rate limits included. vLLM is generic-openai with a baseUrl.
        Preset(
            "ollama",
            "http://127.0.0.1:11434/v1",
            needs_key=False,
            embedding_models=("nomic-embed-text",),
        ),
        Preset(
            "lmstudio",
            "http://127.0.0.1:1234/v1",
            needs_key=False,
            embedding_models=("text-embedding-nomic-embed-text-v1.5",),
        ),
    )
}

PROVIDER_TYPES: tuple[str, ...] = tuple(PRESETS)


def preset_for(provider_type: str) -> Preset:
    return PRESETS[provider_type]


def dialect_named(name: str) -> Dialect:
    """The dialect a preset type reads quotas in (persisted state names it); the
    most tolerant one for a name no preset has any more."""
    preset = PRESETS.get(name)
    return preset.dialect if preset is not None else dialects.GENERIC


def bucket_key(provider_id: str, scope: str, model: str) -> str:
    """The quota an entry draws from: entries with the same key are limited together."""
    if scope == "account":
        return f"{provider_id}/*"
    if scope == "free" and model.endswith(":free"):
        return f"{provider_id}/*:free"
    return f"{provider_id}/{model}"
