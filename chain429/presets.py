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
    # Whether the provider accepts stream_options.include_usage on streams.
    supports_stream_usage: bool = True


PRESETS: dict[str, Preset] = {
    preset.type: preset
    for preset in (
        Preset("openrouter", "https://openrouter.ai/api/v1"),
        Preset("groq", "https://api.groq.com/openai/v1"),
        Preset("cerebras", "https://api.cerebras.ai/v1"),
        Preset("openai", "https://api.openai.com/v1"),
        # Gemini's OpenAI-compatible endpoint.
        Preset("google-ai", "https://generativelanguage.googleapis.com/v1beta/openai"),
        Preset("mistral", "https://api.mistral.ai/v1"),
        # Anything else that speaks OpenAI's API: the config must give baseUrl.
        Preset("generic-openai", None),
    )
}

PROVIDER_TYPES: tuple[str, ...] = tuple(PRESETS)


def preset_for(provider_type: str) -> Preset:
    return PRESETS[provider_type]
