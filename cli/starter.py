"""What `init` writes: the starter config, and the keys and placeholders in `.env`.

`init` never replaces what the user already has. A proxy key
(`CHAIN429_API_KEY`, what clients send) or admin key (`CHAIN429_ADMIN_KEY`,
what the CLI sends to change a running server) already in `.env` stays, and
`init` says so; only a missing one is generated. Provider keys that are not
set get a commented line (`# GROQ_API_KEY=`), so adding that provider later
is a matter of filling it in.

`provider add` with no config file writes the same starter without asking
(`create_quietly`), as `init --yes` would.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import env_file, wizard
from .output import say

PLACEHOLDER_NOTE = (
    "# Provider keys not set yet: fill one in and remove its `#`. A provider that is\n"
    "# not in the config yet also needs `chain429 provider add ID --type TYPE`.\n"
)
_MENTIONED = re.compile(r"^[ \t]*#?[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)[ \t]*=", re.M)


@dataclass(frozen=True)
class Key:
    var: str
    value: str
    kept: bool  # it was in .env already


@dataclass
class Starter:
    """What was written: the config's path and plan, the two keys, the placeholders."""

    path: Path
    plan: wizard.InitPlan
    keys: dict[str, Key] = field(default_factory=dict)
    placeholders: list[str] = field(default_factory=list)

    @property
    def dotenv(self) -> Path:
        return self.path.parent / ".env"


def ensure_key(dotenv: Path, var: str) -> Key:
    """The key `var` from .env, or a new one written there (mode 600)."""
    from chain429.config.loader import read_dotenv  # the model: not at start-up (main.py)

    existing = read_dotenv(dotenv).get(var)
    if existing:
        return Key(var, existing, kept=True)
    value = wizard.new_proxy_key()
    env_file.upsert_dotenv(dotenv, var, value)
    return Key(var, value, kept=False)


def add_placeholders(dotenv: Path, variables: list[str]) -> list[str]:
    """Append `# VAR=` for each variable .env does not mention yet; the ones added."""
    from chain429.config.writer import write_atomically

    try:
        text = dotenv.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    mentioned = set(_MENTIONED.findall(text))
    added = [var for var in dict.fromkeys(variables) if var not in mentioned]
    if not added:
        return []
    if text and not text.endswith("\n"):
        text += "\n"
    gap = "\n" if text and not text.endswith("\n\n") else ""
    block = PLACEHOLDER_NOTE + "".join(f"# {var}=\n" for var in added)
    write_atomically(dotenv, text + gap + block)
    os.chmod(dotenv, 0o600)
    return added


def unset_key_vars(plan: wizard.InitPlan, environ: Mapping[str, str]) -> list[str]:
    """Key variables to leave a placeholder for: each provider not picked, each picked one unset."""
    out = []
    for known in wizard.KNOWN:
        picked = plan.providers.get(known.type)
        if picked is None:
            out.append(known.env[0])
        elif not environ.get(picked):
            out.append(picked)
    return out


def write(path: Path, plan: wizard.InitPlan, environ: Mapping[str, str]) -> Starter:
    """The starter config at `path`, its keys and placeholders in the .env beside it.

    Raises OSError (with the file name) when something cannot be written.
    """
    from chain429.config.loader import parse_config_text
    from chain429.config.writer import write_atomically

    text = wizard.render_config(plan)
    unset = {var: env_file.unset_value(var) for var in env_file.referenced_vars(text)}
    parse_config_text(text, environ=unset)  # a bug here must not write a bad file
    path.parent.mkdir(parents=True, exist_ok=True)
    starter = Starter(path, plan)
    for var in (wizard.PROXY_KEY_VAR, wizard.ADMIN_KEY_VAR):
        starter.keys[var] = ensure_key(starter.dotenv, var)
    starter.placeholders = add_placeholders(starter.dotenv, unset_key_vars(plan, environ))
    write_atomically(path, text)
    return starter


def report_keys(starter: Starter) -> None:
    """Say where each key is, whether it is new, and what overrides it."""
    roles = {wizard.PROXY_KEY_VAR: "proxy key", wizard.ADMIN_KEY_VAR: "admin key"}
    for var, key in starter.keys.items():
        if key.kept:
            say(f"kept the {roles[var]} already in {starter.dotenv} ({var})")
        else:
            say(f"wrote a new {roles[var]} to {starter.dotenv} as {var} (mode 600)")
        if os.environ.get(var, key.value) != key.value:
            say(f"note: {var} in your environment wins over {starter.dotenv}; unset it")
    if starter.placeholders:
        names = ", ".join(starter.placeholders)
        say(f"added commented placeholders to {starter.dotenv} for {names}")


def create_quietly(path: Path) -> Starter:
    """What `init --yes` writes, for the providers whose keys are set (maybe none)."""
    from chain429.config.loader import read_dotenv

    environ = {**read_dotenv(path.parent / ".env"), **os.environ}
    starter = write(path, wizard.plan(list(wizard.detect_keys(environ)), environ), environ)
    providers = ", ".join(starter.plan.providers) or "none yet"
    say(f"created {path} as `chain429 init --yes` would (providers: {providers})")
    report_keys(starter)
    return starter
