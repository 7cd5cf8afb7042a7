"""Options several commands share, spelled and explained once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# The admin key the CLI sends: this variable, or `init`'s entry of that name in
# the .env beside the config (chain429.cli.client says the whole order).
ADMIN_KEY_ENV = "CHAIN429_ADMIN_KEY"

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file. Default: $CHAIN429_CONFIG, $CONFIG_PATH, ./chain429.yaml, "
        "then chain429.yaml in the user config dir.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the data as JSON.")]
