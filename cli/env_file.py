"""The `${VAR}` references of a config text, and the `.env` file that holds their values.

The CLI writes keys to `.env` (mode 600) rather than into the config, so the
config can be shared and committed: `upsert_dotenv` and `drop_dotenv` change
one variable and keep every other line as it was. Commands that validate a
config where its variables are not set (they are set only where the server
runs) give each one a value of its own (`unset_value`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

UNSET = "https://unset.invalid"


def unset_value(var: str) -> str:
    """`UNSET` for one variable: each its own, since keys must differ (two clients' keys,
    both set only where the server runs, are still two keys)."""
    return f"{UNSET}/{var}"


def referenced_vars(text: str) -> set[str]:
    """Variables a config text needs (`${VAR}`; not `${VAR:-default}` nor `$${...}`)."""
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))


def upsert_dotenv(path: Path, name: str, value: str) -> None:
    """Set NAME=value in a .env file (mode 600), keeping every other line as it was."""
    from chain429.config.writer import write_atomically

    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        lines = []
    else:
        os.chmod(path, 0o600)  # before the new key is in it
    pattern = re.compile(rf"\s*(export\s+)?{re.escape(name)}\s*=")
    out, done = [], False
    for line in lines:
        match = pattern.match(line)
        if match is None:
            out.append(line)
        elif not done:  # a later duplicate would win when read, so it goes
            out.append(f"{match[1] or ''}{name}={value}\n")
            done = True
    if not done:
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        out.append(f"{name}={value}\n")
    write_atomically(path, "".join(out))  # a new file is created 0600
    os.chmod(path, 0o600)


def drop_dotenv(path: Path, name: str) -> bool:
    """Remove NAME from a .env file, keeping every other line; whether it was there."""
    from chain429.config.writer import write_atomically

    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        return False
    pattern = re.compile(rf"\s*(export\s+)?{re.escape(name)}\s*=")
    kept = [line for line in lines if pattern.match(line) is None]
    if len(kept) == len(lines):
        return False
    write_atomically(path, "".join(kept))
    os.chmod(path, 0o600)
    return True
