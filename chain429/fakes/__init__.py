"""Fake providers, shipped so users can try a config before spending real quota.

Owns: the scripted fake OpenAI-compatible server (`provider`), its replies
and their wire framing (`replies`), scripts from the command line or YAML
(`script`, `chain429 fake`), and `chain429 demo` (`demo`). The tests and the
benchmark use the same fake.

May import: the provider, replies and script modules use the standard
library (and httptools, yaml) only; the demo builds a real server, so it may
import every other room.
"""
