"""`chain429 fake`: a local OpenAI-compatible provider that misbehaves on cue.

Point a config's provider at it to see what chain429 does with a 429, a
quota at zero, a slow first token or a cut stream, before spending real
quota (docs/fake.md). The script format is chain429.fakes.script's.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Annotated

import typer

from .output import fail, port_in_use


def fake(
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 8429,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    name: Annotated[
        str, typer.Option(help='The provider\'s name, in its answers ("Hello from NAME").')
    ] = "fake",
    reply: Annotated[
        list[str] | None,
        typer.Option(
            "--reply",
            "-r",
            help="One scripted answer, in order (repeat the option): STATUS or ok, then "
            "options: retry-after=S, delay=S, first-token=S, chunk-delay=S, cut=N, stall=N, "
            "text=..., times=N, header=NAME:VALUE. Example: -r 429,retry-after=30 -r ok",
            show_default=False,
        ),
    ] = None,
    script: Annotated[
        Path | None,
        typer.Option(
            "--script",
            "-s",
            help="A YAML file with a `replies` list (and `loop`); played before any --reply.",
            show_default=False,
        ),
    ] = None,
    loop: Annotated[
        bool | None,
        typer.Option(
            "--loop/--no-loop", help="Play the script again when it ends.", show_default=False
        ),
    ] = None,
) -> None:
    """Run a fake OpenAI-compatible provider until Ctrl-C (docs/fake.md).

    Unscripted, it answers every chat request: a JSON completion, or an SSE
    stream when the request asks for one. A script makes it answer request by
    request as told (429s, slow first tokens, cut streams...), then normally.
    """
    from chain429.fakes.provider import run_fake_provider_forever
    from chain429.fakes.script import ScriptError, load_script

    try:
        played = load_script(script, reply or (), loop)
    except ScriptError as err:
        raise fail(str(err)) from None
    try:
        run_fake_provider_forever(
            host,
            port,
            played.reply_source(name),
            name=name,
            announce=f"script: {played.describe()}",
        )
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise port_in_use(port) from None
        raise fail(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def register(app: typer.Typer) -> None:
    """Add this module's command to the CLI."""
    app.command()(fake)
