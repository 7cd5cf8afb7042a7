"""Talking to providers: the pooled HTTP client and everything about their wire.

Owns: the client on aiohttp's pool (`client`, `transport`), bounded
decompression (`decoding`), SSE framing (`sse`), provider JSON that cannot
break the parser (`provider_json`), the presets and their rate-limit dialects
(`presets`, `dialects`), time units, parsing and formatting (`times`),
OpenAI's error shape, which providers send and chain429 answers with
(`openai_error`), and which addresses may never be a provider (`addresses`).

May import: nothing else of chain429's (like httpx's `_transports/`), so
every other room can build on it.
"""
