"""`chain429 limits ...`: steer a running server's rate-limit state.

`chain429 status` shows the state; these commands change it, over the admin
API like the web UI's Live limits page (`POST /v1/admin/limits/clear`), so
both do exactly the same thing. Pausing an entry is `chain429 entry pause`
(entry_commands.py). The server is found as for `status`
(`--server`, `$CHAIN429_SERVER`, the current context, else the config file).
"""

from __future__ import annotations

from typing import Annotated

import typer

from .client import AdminClient, reports_errors
from .entry_commands import entry_body, split_entry
from .options import ConfigOption, JsonOption, ServerOption
from .output import fail, print_json

limits_app = typer.Typer(
    help="A running server's rate-limit state: clear a cooldown (see `status` to watch it).",
    no_args_is_help=True,
)


@limits_app.command("clear")
@reports_errors
def clear(
    entry: Annotated[
        str,
        typer.Argument(
            metavar="PROVIDER[/MODEL]",
            help="A provider's id, or one of its entries as PROVIDER/MODEL (split at the "
            "first slash: openrouter/meta-llama/x:free).",
        ),
    ],
    model: Annotated[
        str | None,
        typer.Argument(
            metavar="MODEL",
            help="The entry's model, as a second word (`limits clear PROVIDER MODEL`, "
            "the older form).",
            show_default=False,
        ),
    ] = None,
    server: ServerOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """End the cooldowns of an entry (PROVIDER/MODEL) or of a whole provider, now.

    The server asks the entry again at once, without waiting for a probe, and
    its back-off on further 429s starts over: after adding credit, say. Prints
    how many cooldowns were in force. A pause is not a cooldown: `entry resume`
    ends that. Exit 2 when the server is unreachable, the key may not edit, or
    the provider or entry is unknown.
    """
    if model is None:
        provider, model = split_entry(entry)
    elif "/" in entry:
        raise fail(f"{entry!r} names an entry already: give PROVIDER/MODEL, or PROVIDER MODEL")
    else:
        provider = entry
    with AdminClient.connect(server, config) as client:
        answer = client.post("/v1/admin/limits/clear", entry_body(provider, model))
    if as_json:
        print_json(answer)
        return
    what = f"{provider}/{model}" if model is not None else provider
    cleared = answer.get("cleared", 0)
    noun = "cooldown" if cleared == 1 else "cooldowns"
    typer.echo(f"cleared {cleared} {noun} of {what}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.add_typer(limits_app, name="limits")
