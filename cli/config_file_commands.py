"""`config path|show|schema`: the config file itself, read-only: where it is, what it
says, and the JSON Schema an editor checks it against.

The commands that change the file are config_commands' (init, provider ...),
chain_commands', settings_commands' and edit_commands'.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import output
from .options import ConfigOption, JsonOption
from .output import fail, print_json, say

config_app = typer.Typer(
    help="The config file: where it is, what it says, its JSON Schema.", no_args_is_help=True
)


def _found(explicit: Path | None) -> tuple[Path, str]:
    from chain429.config.loader import find_config_path  # loads the model: not at start-up

    if explicit is not None:
        return explicit, "given with --config"
    for variable in ("CHAIN429_CONFIG", "CONFIG_PATH"):
        if os.environ.get(variable):
            return find_config_path(None), f"from ${variable}"
    path = find_config_path(None)
    if path.parent == Path.cwd():
        return path, "chain429.yaml in the current directory"
    return path, "the user config dir (no chain429.yaml in the current directory)"


@config_app.command("path")
def config_path(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Print the config file the CLI would use, and how it was found."""
    path, how = _found(config)
    exists = path.is_file()
    if as_json:
        print_json({"path": str(path), "found_by": how, "exists": exists})
        return
    typer.echo(str(path))
    say(f"{how}{'' if exists else '; the file does not exist'}")


@config_app.command("show")
def config_show(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Print the config file with secrets masked (`${VAR}` references are shown as written)."""
    from chain429.config.writer import ConfigDocument, ConfigEditError

    path, _ = _found(config)
    if not path.is_file():
        raise fail(f"no config file at {path} (create one with `chain429 init`)")
    try:
        data = ConfigDocument.load(path).masked()
    except ConfigEditError as err:
        for issue in err.issues:
            output.stderr.print(str(issue), markup=False, highlight=False)
        raise fail(f"cannot read {path}: {err.message}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise fail(f"cannot read {path}: {err}") from None
    if as_json:
        print_json(data)
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


@config_app.command("schema")
def config_schema(
    file: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write it to this file instead of stdout.", show_default=False
        ),
    ] = None,
) -> None:
    """Print the JSON Schema of the config file (draft 2020-12), for an editor.

    With the first line `# yaml-language-server: $schema=FILE` in chain429.yaml, an
    editor with a YAML language server (VS Code's YAML extension, Neovim, Helix...)
    completes keys, shows each one's meaning and default, and marks mistakes while
    you type (docs/config.md).
    """
    from chain429.config.schema import file_schema

    text = json.dumps(file_schema(), indent=2) + "\n"
    if file is None:
        sys.stdout.write(text)
        return
    try:
        file.write_text(text, encoding="utf-8")
    except OSError as err:
        raise fail(f"cannot write {file}: {err.strerror or err}") from None
    say(f"wrote {file}; start chain429.yaml with: # yaml-language-server: $schema={file}")


def register(app: typer.Typer) -> None:
    """Add `config path|show|schema` to the CLI."""
    app.add_typer(config_app, name="config")
