"""Fake providers, shipped so users can try a config before spending real quota.

Owns: the scripted fake OpenAI-compatible server (`provider`), its replies
and their wire framing (`replies`), scripts from the command line or YAML
(`script`, `chain429 fake`), the fault catalogue (`faults`: every way a
provider fails, as scripts), the fault matrix that plays it against a
config's chains (`matrix`, `chain429 selftest`), and `chain429 demo`
(`demo`). The tests and the benchmark use the same fake.

May import: the provider, replies and script modules use the standard
library (and httptools, yaml) only, and faults only them; the demo and the
matrix build a real server, so they may import every other room.
"""
