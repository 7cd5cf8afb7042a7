"""Write docs/cli.md from the commands' own --help text (run after changing a command)."""

from __future__ import annotations

import sys
from pathlib import Path

from typer.testing import CliRunner

from chain429.cli.main import app

DOC = Path(__file__).with_name("cli.md")
WIDTH = "88"


def command_names() -> list[str]:
    import typer.main

    group = typer.main.get_command(app)
    return sorted(group.commands)  # type: ignore[attr-defined]


def render() -> str:
    runner = CliRunner()
    env = {"COLUMNS": WIDTH, "TERM": "dumb", "NO_COLOR": "1"}
    parts = [
        "# Command line\n",
        "Generated from each command's `--help` by `python docs/generate_cli_docs.py`; "
        "do not edit by hand.\n",
    ]
    for args in [[], *([name] for name in command_names())]:
        title = " ".join(["chain429", *args])
        result = runner.invoke(app, [*args, "--help"], env=env, prog_name="chain429")
        text = "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())
        parts.append(f"## `{title}`\n\n```\n{text}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    DOC.write_text(render())
    sys.stdout.write(f"wrote {DOC}\n")
