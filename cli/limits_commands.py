"""`chain429 limits ...`: steer a running server's rate-limit state.

`chain429 status` shows the state; these commands change it, over the admin
API like the web UI's Live limits page (`POST /v1/admin/limits/clear`), so
both do exactly the same thing. The server is found as for `status`
(`--server`, `$CHAIN429_SERVER`, the current context, else the config file).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .client import AdminClient, reports_errors
from .options import ConfigOption, JsonOption, ServerOption
from .output import print_json

limits_app = typer.Typer(
    help="A running server's rate-limit state: clear a cooldown (see `status` to watch it).",
    no_args_is_help=True,
)


@limits_app.command("clear")
@reports_errors
def clear(
    provider: Annotated[str, typer.Argument(metavar="PROVIDER", help="The provider's id.")],
    model: Annotated[
        str | None,
        typer.Argument(
            metavar="MODEL",
            help="Only this entry (its entry, quota bucket and provider cooldowns). "
            "Default: every cooldown of the provider.",
            show_default=False,
        ),
    ] = None,
    server: ServerOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """End the cooldowns of an entry (PROVIDER MODEL) or of a whole provider, now.

    The server asks the entry again at once, without waiting for a probe, and
    its back-off on further 429s starts over. Prints how many cooldowns were in
    force. Exit 2 when the server is unreachable, the key may not edit, or the
    provider or entry is unknown.
    """
    body = {"provider": provider, **({"model": model} if model is not None else {})}
    with AdminClient.connect(server, config) as client:
        answer = client.post("/v1/admin/limits/clear", json.dumps(body))
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
