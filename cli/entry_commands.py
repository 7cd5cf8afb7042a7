"""`chain429 entry pause|resume PROVIDER[/MODEL]`: skip a provider or one entry on a
running server, without editing the config file.

A pause is server state, like a cooldown, so these commands talk to the admin
API (`POST /v1/admin/entries/pause|resume`), as the web UI's Live limits page
does; `chain429 status` shows what is paused, by whom and since when. The
server is found as for `status` (`--server`, `$CHAIN429_SERVER`, the current
context, else the config file).

An entry is named as the trace and `status` name it, `PROVIDER/MODEL`, split
at the first slash: provider ids have none, models may
(`openrouter/meta-llama/llama-3.3-70b-instruct:free`).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from . import output
from .client import AdminClient, reports_errors
from .options import ConfigOption, JsonOption, ServerOption
from .output import fail, print_json, say

entry_app = typer.Typer(
    help="Pause or resume a provider or one entry on a running server (`status` shows pauses).",
    no_args_is_help=True,
)

EntryNameArgument = Annotated[
    str,
    typer.Argument(
        metavar="PROVIDER[/MODEL]",
        help="A provider's id, or one of its entries as PROVIDER/MODEL (split at the first "
        "slash: openrouter/meta-llama/x:free).",
    ),
]


def split_entry(text: str) -> tuple[str, str | None]:
    """`groq/llama-3` -> ("groq", "llama-3"); `groq` -> ("groq", None)."""
    provider, slash, model = text.partition("/")
    if not provider or (slash and not model):
        raise fail(f"{text!r} is not PROVIDER or PROVIDER/MODEL")
    return provider, model if slash else None


def entry_body(provider: str, model: str | None) -> str:
    """The JSON body the steering routes take."""
    return json.dumps({"provider": provider, **({"model": model} if model is not None else {})})


@entry_app.command("pause")
@reports_errors
def pause(
    entry: EntryNameArgument,
    server: ServerOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Skip a provider, or one entry, until it is resumed (`skip:paused` in traces).

    Every request skips it, streams and probes too, on every instance sharing
    the server's state store; the pause survives restarts, and ends when the
    config no longer has what it names. Server-side chain tests do not call it;
    `chain429 chain test` still can. Exit 2 when the server is unreachable, the
    key may not edit, or the provider or entry is unknown.
    """
    provider, model = split_entry(entry)
    with AdminClient.connect(server, config) as client:
        answer = client.post("/v1/admin/entries/pause", entry_body(provider, model))
    if as_json:
        print_json(answer)
        return
    paused = answer.get("paused") or {}
    if answer.get("new"):
        typer.echo(f"paused {entry}")
    else:
        since = output.local_time(str(paused.get("since")))
        typer.echo(f"{entry} was paused already, since {since} by {paused.get('by')}")


@entry_app.command("resume")
@reports_errors
def resume(
    entry: EntryNameArgument,
    server: ServerOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """End the pause of an entry, or of a provider and every one of its entries.

    Prints how many pauses ended. Exit 2 when the server is unreachable, the
    key may not edit, or the provider or entry is unknown.
    """
    provider, model = split_entry(entry)
    with AdminClient.connect(server, config) as client:
        answer = client.post("/v1/admin/entries/resume", entry_body(provider, model))
    if as_json:
        print_json(answer)
        return
    resumed = answer.get("resumed", 0)
    typer.echo(f"resumed {entry}" if resumed else f"{entry} was not paused")
    if resumed > 1:
        say(f"{output.plural(resumed, 'pause')} ended (the provider's and its entries')")
    if answer.get("provider_paused"):
        output.stderr.print(
            f"warning: provider {provider} is still paused as a whole, so {entry} is still "
            f"skipped; `chain429 entry resume {provider}` ends that",
            style="yellow",
            markup=False,
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    """Add `entry ...` to the CLI."""
    app.add_typer(entry_app, name="entry")
