"""`settings get|set`: the `settings` block of the config file, one key at a time.

Keys are the file's camelCase names (`cooldownDefaultMs`); the snake_case
spelling works too. A value is read as YAML would read it in the file (`true`,
`4000`), except for text settings, which take the value as written, and list
settings, which take `a,b` or `[a, b]` (one item is a list of one). `null`
removes the key, so the default applies again. The change is validated with the whole
file before anything is written (config_commands.write_change).
"""

from __future__ import annotations

import difflib
import json
import types
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import typer

from . import output
from .config_commands import config_path, load_document, write_change
from .options import ConfigOption, JsonOption, ServerOption
from .output import fail, say

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from chain429.config.writer import ConfigDocument

# What the running server reads once, at start: binding, the request log, logging.
AT_RESTART = frozenset(
    {"host", "port", "dbPath", "databaseUrl", "logLevel", "logFormat", "accessLog"}
    | {"logRetentionDays"}
)

settings_app = typer.Typer(
    help="The settings block of the config file: get and set one key.", no_args_is_help=True
)
KeyArgument = Annotated[
    str, typer.Argument(metavar="KEY", help="A setting, as in the file: cooldownDefaultMs.")
]


def _fields() -> dict[str, FieldInfo]:
    """Every setting by its name in the file (camelCase), in the order of docs/config.md."""
    from chain429.config.model import Settings  # pydantic: not needed to declare commands

    return {info.alias or name: info for name, info in Settings.model_fields.items()}


def _key(text: str) -> str:
    fields = _fields()
    by_snake = {_snake(alias): alias for alias in fields}
    key = text if text in fields else by_snake.get(text)
    if key is None:
        close = difflib.get_close_matches(text, list(fields), n=1)
        hint = f"; did you mean {close[0]}?" if close else " (see docs/config.md)"
        raise fail(f"no setting named {text!r}{hint}")
    return key


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _is_text(annotation: Any) -> bool:
    if annotation is str or get_origin(annotation) is Literal:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_is_text(arg) for arg in get_args(annotation) if arg is not type(None))
    return False


def parse_value(key: str, text: str) -> Any:
    """VALUE as the setting takes it (see the module docstring); None removes the key."""
    if text.strip() in ("null", "~"):
        return None
    annotation = _fields()[key].annotation
    if _is_text(annotation):
        return text
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text  # `[${A}, ${B}]` is not YAML (braces); the validation judges the rest
    if get_origin(annotation) is tuple and not isinstance(value, list):
        items = text.strip().removeprefix("[").removesuffix("]").split(",")
        return [item.strip().strip("'\"") for item in items if item.strip()]
    return value


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _default(key: str) -> Any:
    from pydantic import BaseModel

    default = _fields()[key].get_default(call_default_factory=True)
    if isinstance(default, BaseModel):  # a section (retry, breaker): as the file writes it
        return default.model_dump(by_alias=True)
    return list(default) if isinstance(default, tuple) else default


@settings_app.command("get")
def settings_get(
    key: Annotated[
        str | None,
        typer.Argument(
            metavar="[KEY]", help="One setting (default: all of them).", show_default=False
        ),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print a setting's value (secrets masked), or every setting with where it comes from."""
    written = load_document(config_path(config)).masked().get("settings") or {}
    written = written if isinstance(written, dict) else {}
    if key is not None:
        name = _key(key)
        value = written[name] if name in written else _default(name)
        if as_json:
            output.print_json(value)
        else:
            typer.echo(_shown(value))
            if name not in written:
                say(f"{name} is not in the file: that is its default")
        return
    values = {name: written[name] if name in written else _default(name) for name in _fields()}
    if as_json:
        output.print_json(values)
        return
    rows = [
        [name, _shown(value), "file" if name in written else "default"]
        for name, value in values.items()
    ]
    output.table(["KEY", "VALUE", "SOURCE"], rows, title="settings")


@settings_app.command("set")
def settings_set(
    key: KeyArgument,
    value: Annotated[
        str,
        typer.Argument(
            metavar="VALUE",
            help="As in the file: 4000, true, ${VAR}; a list as a,b or [a, b]; null removes "
            "the key.",
        ),
    ],
    config: ConfigOption = None,
    server: ServerOption = None,
) -> None:
    """Set one key of the settings block; the whole file is validated before it is written."""
    from chain429.config.masking import SETTINGS_SECRETS

    name = _key(key)
    parsed = parse_value(name, value)
    path = config_path(config)

    def change(document: ConfigDocument) -> None:
        document.patch_settings({name: parsed})

    if parsed is None:
        done = f"removed settings.{name} (its default, {_shown(_default(name))}, applies)"
    else:
        done = f"set settings.{name} to {_shown(SETTINGS_SECRETS.get(name, _same)(parsed))}"
    write_change(path, change, done, server)
    if name in SETTINGS_SECRETS and parsed and "${" not in json.dumps(parsed):
        say(f"note: {name} is written in clear; a ${{VAR}} reference keeps it in .env instead")
    if name in AT_RESTART:
        say(f"note: a running server takes {name} when it restarts, not on reload")


def _same(value: Any) -> Any:
    return value


def register(app: typer.Typer) -> None:
    """Add `settings get|set` to the CLI."""
    app.add_typer(settings_app, name="settings")
