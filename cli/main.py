"""`chain429`: serve the proxy, try it with fake providers, check a config.

stdout is data, stderr is talk. Exit codes follow kubectl: 0 ok, 1 a check
failed, 2 usage or error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from chain429 import __version__

from . import output
from .options import ConfigOption, JsonOption
from .output import fail, port_in_use

if TYPE_CHECKING:
    from chain429.config.model import Config

# Start-up: `--version`, `--help` and `validate` must start in a quarter of a second
# (bench/cli_startup.py measures it, tests/cli/test_startup.py checks what gets
# imported). So this module and every *_commands module import at the top only what
# declaring the commands needs (typer, the options, cheap tables of names); the
# config model, the server, HTTP clients and rich are imported inside the commands
# that use them. And `--version` and this module's own commands (serve, validate,
# demo) run without even declaring the others (`run`): importing the other command
# modules and having typer build their 30-odd commands is a quarter of what
# `validate` costs. `app`, as imported, is always the whole CLI.

output.typer_style()
_app = typer.Typer(
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


@_app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """OpenAI-compatible proxy that walks a chain of LLM providers when they rate-limit."""


def load_or_exit(path: Path) -> Config:
    from chain429.config.errors import ConfigError
    from chain429.config.loader import load_config

    try:
        return load_config(path)
    except ConfigError as err:
        for issue in err.issues:
            output.stderr.print(str(issue), markup=False, highlight=False)
        raise fail(f"{path} is not a valid config (see `chain429 validate`)") from None


@_app.command()
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
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes on this host, sharing limits through Redis "
            "(settings.stateStore); above 1 needs it.",
        ),
    ] = 1,
) -> None:
    """Run the proxy in the foreground until Ctrl-C."""
    from chain429.config.loader import find_config_path
    from chain429.requestlog import import_peewee_without_its_postgres_driver

    import_peewee_without_its_postgres_driver()  # before the server imports it
    from chain429.server import logs
    from chain429.server.app import create_app
    from chain429.server.serving import (
        ExposureError,
        NeedsSharedStore,
        PortInUse,
        RequestLogError,
        announce_open_access,
        bind,
        check_exposure,
        check_workers,
        open_request_log,
        resolve_bind,
        serve_workers,
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
        check_workers(loaded, workers)
    except (ValueError, ExposureError, NeedsSharedStore) as err:
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

    if workers > 1:
        # Each worker opens its own request log and store, and says when it serves.
        try:
            serve_workers(
                path,
                bind_host,
                workers,
                sock=sock,
                access_log=access_log or loaded.settings.access_log,
                announce=f"chain429 {__version__} serving {path} on http://{url_host}:"
                f"{sock.getsockname()[1]}/v1 (chains: {chains}; {workers} workers)",
            )
        except (RequestLogError, ValueError) as err:
            raise fail(str(err)) from None
        return
    try:
        telemetry = open_request_log(loaded)
    except RequestLogError as err:
        sock.close()
        raise fail(str(err)) from None
    try:
        web_app = create_app(loaded, config_path=path, telemetry=telemetry)
    except ValueError as err:  # $CHAIN429_STATE_URL that is no Redis URL
        sock.close()
        raise fail(str(err)) from None
    run_server(
        web_app,
        bind_host,
        bind_port,
        sock=sock,
        ready=ready,
        access_log=access_log or loaded.settings.access_log,
    )


@_app.command()
def validate(
    file: Annotated[
        Path | None, typer.Argument(help="Config file (default: the one serve would use).")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check a config file: print `ok` (exit 0) or every problem with file and line (exit 1)."""
    from chain429.config.errors import ConfigError
    from chain429.config.loader import find_config_path, load_config

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


@_app.command()
def demo(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port for the demo proxy.")] = 3429,
    once: Annotated[bool, typer.Option("--once", help="Exit after the scripted requests.")] = False,
) -> None:
    """Run the proxy with built-in fake providers (the first one rate-limits); no keys needed."""
    from chain429.fakes.demo import run_demo
    from chain429.server import logs
    from chain429.server.serving import PortInUse

    logs.configure("warn")
    try:
        run_demo(port=port, once=once)
    except PortInUse:
        raise port_in_use(port) from None
    except OSError as err:
        raise fail(f"cannot listen on 127.0.0.1:{port}: {err.strerror or err}") from None


# The commands this module declares: `run` needs nothing else for them.
_OWN = frozenset({"serve", "validate", "demo"})


def _whole() -> typer.Typer:
    """The CLI with every command, in the order `--help` lists them (declared once)."""
    if "app" not in globals():
        from . import (
            alias_commands,
            chain_commands,
            client_commands,
            config_commands,
            config_file_commands,
            edit_commands,
            entry_commands,
            fake_commands,
            limits_commands,
            selftest_commands,
            server_commands,
            settings_commands,
        )

        config_commands.register(_app)
        config_file_commands.register(_app)
        chain_commands.register(_app)
        alias_commands.register(_app)
        client_commands.register(_app)
        settings_commands.register(_app)
        server_commands.register(_app)
        fake_commands.register(_app)
        edit_commands.register(_app)
        limits_commands.register(_app)
        entry_commands.register(_app)
        selftest_commands.register(_app)
        globals()["app"] = _app
    return _app


if TYPE_CHECKING:
    app: typer.Typer


def __getattr__(name: str) -> typer.Typer:
    """`from chain429.cli.main import app` (tests, docs/generate_cli_docs.py): the whole CLI."""
    if name == "app":
        return _whole()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run() -> None:
    """The `chain429` command (as installed, also when run as `python -m chain429.cli.main`).

    The top level takes no option with a value, so the first word that is not an
    option names the command. `--version` alone, or one of this module's commands,
    runs with this module's commands only: their help, errors and exit codes are
    the same either way (a subcommand's help does not list its siblings). Anything
    else (`--help`, another command, a typo that deserves suggestions) gets the
    whole CLI.
    """
    args = sys.argv[1:]
    command = next((arg for arg in args if not arg.startswith("-")), None)
    own = command in _OWN or args == ["--version"]
    (_app if own else _whole())(prog_name="chain429")


if __name__ == "__main__":
    run()
