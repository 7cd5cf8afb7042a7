"""`chain429`: serve the proxy, try it with fake providers, check a config.

stdout is data, stderr is talk. Exit codes follow kubectl: 0 ok, 1 a check
failed, 2 usage or error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from chain429 import __version__
from chain429.config.errors import ConfigError
from chain429.config.loader import find_config_path, load_config
from chain429.config.model import Config
from chain429.server import logs

from . import (
    chain_commands,
    config_commands,
    config_file_commands,
    edit_commands,
    fake_commands,
    limits_commands,
    output,
    selftest_commands,
    server_commands,
    settings_commands,
)
from .options import ConfigOption, JsonOption
from .output import fail, port_in_use

output.typer_style()
app = typer.Typer(
    name="chain429",
    help="OpenAI-compatible proxy that walks a chain of LLM providers when they rate-limit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"chain429 {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """OpenAI-compatible proxy that walks a chain of LLM providers when they rate-limit."""


def load_or_exit(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as err:
        for issue in err.issues:
            output.stderr.print(str(issue), markup=False, highlight=False)
        raise fail(f"{path} is not a valid config (see `chain429 validate`)") from None


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[
        str | None, typer.Option(help="Bind address (overrides settings.host).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Port (overrides $PORT and settings.port); 0 picks a free one."
        ),
    ] = None,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every HTTP request.")
    ] = False,
) -> None:
    """Run the proxy in the foreground until Ctrl-C."""
    from chain429.server.app import create_app
    from chain429.server.serving import (
        ExposureError,
        PortInUse,
        RequestLogError,
        announce_open_access,
        bind,
        check_exposure,
        open_request_log,
        resolve_bind,
    )
    from chain429.server.serving import (
        serve as run_server,
    )

    path = find_config_path(str(config) if config else None)
    loaded = load_or_exit(path)
    logs.configure(loaded.settings.log_level, loaded.settings.log_format)
    try:
        bind_host, bind_port = resolve_bind(loaded, host, port)
        check_exposure(loaded, bind_host)
    except (ValueError, ExposureError) as err:
        raise fail(str(err)) from None
    try:  # first: a port in use is the one thing said
        sock = bind(bind_host, bind_port)
    except PortInUse:
        raise port_in_use(bind_port) from None
    except OSError as err:
        raise fail(f"cannot listen on {bind_host}:{bind_port}: {err.strerror or err}") from None
    announce_open_access(loaded, bind_host)
    chains = ", ".join(chain.name for chain in loaded.chains) or "none"
    url_host = f"[{bind_host}]" if ":" in bind_host else bind_host

    def ready(bound_port: int) -> None:
        typer.echo(
            f"chain429 {__version__} serving {path} on http://{url_host}:{bound_port}/v1 "
            f"(chains: {chains})",
            err=True,
        )

    try:
        telemetry = open_request_log(loaded)
    except RequestLogError as err:
        sock.close()
        raise fail(str(err)) from None
    web_app = create_app(loaded, config_path=path, telemetry=telemetry)
    run_server(
        web_app,
        bind_host,
        bind_port,
        sock=sock,
        ready=ready,
        access_log=access_log or loaded.settings.access_log,
    )


@app.command()
def validate(
    file: Annotated[
        Path | None, typer.Argument(help="Config file (default: the one serve would use).")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check a config file: print `ok` (exit 0) or every problem with file and line (exit 1)."""
    if file is not None and config is not None and file != config:
        raise fail(f"two files to check: {file} and --config {config}; give one")
    path = find_config_path(str(file or config) if (file or config) else None)
    try:
        load_config(path)
    except ConfigError as err:
        if as_json:
            issues = [
                {"file": i.file, "line": i.line, "path": i.path, "message": i.message}
                for i in err.issues
            ]
            typer.echo(json.dumps({"valid": False, "file": str(path), "errors": issues}))
        else:
            for issue in err.issues:
                typer.echo(str(issue))
        raise typer.Exit(1) from None
    typer.echo(json.dumps({"valid": True, "file": str(path)}) if as_json else "ok")


@app.command()
def demo(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port for the demo proxy.")] = 3429,
    once: Annotated[bool, typer.Option("--once", help="Exit after the scripted requests.")] = False,
) -> None:
    """Run the proxy with built-in fake providers (the first one rate-limits); no keys needed."""
    from chain429.fakes.demo import run_demo
    from chain429.server.serving import PortInUse

    logs.configure("warn")
    try:
        run_demo(port=port, once=once)
    except PortInUse:
        raise port_in_use(port) from None
    except OSError as err:
        raise fail(f"cannot listen on 127.0.0.1:{port}: {err.strerror or err}") from None


config_commands.register(app)
config_file_commands.register(app)
chain_commands.register(app)
settings_commands.register(app)
server_commands.register(app)
fake_commands.register(app)
edit_commands.register(app)
limits_commands.register(app)
selftest_commands.register(app)


def run() -> None:
    app(prog_name="chain429")  # as installed, also when run as `python -m chain429.cli.main`


if __name__ == "__main__":
    run()
