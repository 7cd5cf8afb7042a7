"""Provider presets: what a provider `type` implies.

A preset is the one place that knows a provider family: its default base URL
today, its rate-limit dialect and quota scopes once those land. Adding a
provider is adding one preset here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    type: str
    default_base_url: str | None
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


PRESETS: dict[str, Preset] = {
    preset.type: preset
    for preset in (
        Preset(
            "openrouter",
            "https://openrouter.ai/api/v1",
            supports_stream_usage=True,
            quota_scope="free",
        ),
        Preset("groq", "https://api.groq.com/openai/v1", supports_stream_usage=True),
        Preset("cerebras", "https://api.cerebras.ai/v1", supports_stream_usage=True),
        Preset("openai", "https://api.openai.com/v1", supports_stream_usage=True),
        # Gemini's OpenAI-compatible endpoint.
        Preset(
            "google-ai",
            "https://generativelanguage.googleapis.com/v1beta/openai",
            supports_stream_usage=True,
        ),
        # Mistral reports usage on its last chunk unasked and has no stream_options.
        # All keys of a Mistral workspace share its limits (unverified upstream).
        Preset("mistral", "https://api.mistral.ai/v1", quota_scope="account"),
        # Anything else that speaks OpenAI's API: the config must give baseUrl.
        # Unknown servers may reject unknown fields, so nothing extra is sent.
        Preset("generic-openai", None),
        # Local model servers at their default addresses (the OpenAI-compatible
        # endpoints of Ollama and LM Studio): no key, and like generic-openai
        # otherwise, rate limits included. vLLM is generic-openai with a baseUrl.
        Preset("ollama", "http://127.0.0.1:11434/v1", needs_key=False),
        Preset("lmstudio", "http://127.0.0.1:1234/v1", needs_key=False),
    )
}

PROVIDER_TYPES: tuple[str, ...] = tuple(PRESETS)


def preset_for(provider_type: str) -> Preset:
    return PRESETS[provider_type]


def bucket_key(provider_id: str, scope: str, model: str) -> str:
    """The quota an entry draws from: entries with the same key are limited together."""
    if scope == "account":
        return f"{provider_id}/*"
    if scope == "free" and model.endswith(":free"):
        return f"{provider_id}/*:free"
    return f"{provider_id}/{model}"
