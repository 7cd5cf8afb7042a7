"""chain429: an OpenAI-compatible proxy that walks a chain of providers on 429."""

__version__ = "0.1.0"
