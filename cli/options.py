"""Options several commands share, spelled and explained once.

A flag that means the same in several commands is declared here (or, when
one group of commands shares it, beside them: `provider ...`'s in
config_commands, `chain ...`'s in chain_commands) and imported everywhere
it is used. tests/cli/test_options.py fails when one flag reads differently in
two commands, except the few whose meaning differs, listed there with why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

# The admin key the CLI sends: this variable, or `init`'s entry of that name in
# the .env beside the config (chain429.cli.client says the whole order).
ADMIN_KEY_ENV = "CHAIN429_ADMIN_KEY"


def _config_option(help: str) -> Any:
    return typer.Option("--config", "-c", help=help, show_default=False)


ConfigOption = Annotated[
    Path | None,
    _config_option(
        "Config file. Default: $CHAIN429_CONFIG, $CONFIG_PATH, ./chain429.yaml, then "
        "chain429.yaml in the user config dir (`chain429 config path` shows which)."
    ),
]
# `init` writes a new file where it is told, rather than finding one.
NewConfigOption = Annotated[Path | None, _config_option("File to write. Default: ./chain429.yaml.")]
ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        help="Server URL (commands that edit the file tell it to reload). Default: "
        "$CHAIN429_SERVER, the current context, else the host and port of the config file. "
        "Admin key: $CHAIN429_ADMIN_KEY, else the context's admin_key_env variable, else the "
        "config file's first adminKeys entry (${VAR} read from the .env beside it too), else "
        "CHAIN429_ADMIN_KEY in that .env, else apiKeys.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the data as JSON.")]
StreamOption = Annotated[bool, typer.Option("--stream", help="Test with streaming requests.")]
