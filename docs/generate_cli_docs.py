"""Write docs/cli.md from the commands' own --help text (run after changing a command)."""

from __future__ import annotations

import sys
from pathlib import Path

from typer.testing import CliRunner

from chain429.cli.main import app

DOC = Path(__file__).with_name("cli.md")
WIDTH = "88"


def command_paths() -> list[list[str]]:
    """Every command and subcommand, as the words a user types after `chain429`."""
    import typer.main
    from typer.core import TyperGroup

    def walk(group: TyperGroup, prefix: list[str]) -> list[list[str]]:
        paths = []
        for name in sorted(group.commands):
            command = group.commands[name]
            paths.append([*prefix, name])
            if isinstance(command, TyperGroup):
                paths += walk(command, [*prefix, name])
        return paths

    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    return walk(root, [])


def render() -> str:
    runner = CliRunner()
    env = {"COLUMNS": WIDTH, "TERM": "dumb", "NO_COLOR": "1"}
    parts = [
        "# Command line\n",
        "Generated from each command's `--help` by `python docs/generate_cli_docs.py`; "
        "do not edit by hand.\n",
    ]
    for args in [[], *command_paths()]:
        title = " ".join(["chain429", *args])
        result = runner.invoke(app, [*args, "--help"], env=env, prog_name="chain429")
        text = "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())
        parts.append(f"## `{title}`\n\n```\n{text}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    DOC.write_text(render())
    sys.stdout.write(f"wrote {DOC}\n")
