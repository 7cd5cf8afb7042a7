"""Reading a config file: `${VAR}` references, `.env`, and errors with file, line and field.

Every problem is reported as a `ConfigIssue` with file, line and field path,
all of them at once, so a user fixes a file in one pass instead of one error
per restart. A value that came from the environment is never echoed in an
error: it may be a secret.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from chain429.config.cross_checks import cross_check, literal_client_keys
from chain429.config.errors import (
    ConfigError,
    ConfigIssue,
    Loc,
    format_path,
    line_for,
    pydantic_message,
)
from chain429.config.masking import redact
from chain429.config.model import _DEFER_CROSS_CHECKS, Config

__all__ = [
    "HOLDS_REFERENCE",
    "find_config_path",
    "load_config",
    "parse_config_text",
    "read_dotenv",
    "references_in",
    "submitted_reference_rule",
]


# `$${` is an escape for a literal `${`; any other `${` must be a well-formed
# reference, because a typo left in place would be sent upstream as an API key.
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_REFERENCE = re.compile(rf"\$\$\{{|\$\{{({_NAME})(:-([^}}]*))?\}}|\$\{{")
# A value that holds a reference (`${PORT}`, `${PORT:-3429}`) is known only once it
# is resolved: the config file's JSON Schema (chain429.config.schema) takes it
# wherever a number goes, and leaves the judging to the loader.
HOLDS_REFERENCE = rf"\$\{{{_NAME}(:-[^}}]*)?\}}"


def references_in(value: Any) -> set[str]:
    """The variable names `value` (nested data from a request, say) refers to."""
    if isinstance(value, dict):
        return set().union(*(references_in(v) for v in value.values()))
    if isinstance(value, list | tuple):
        return set().union(*(references_in(v) for v in value))
    if isinstance(value, str) and "${" in value:
        return {m[1] for m in _REFERENCE.finditer(value) if m[1]}
    return set()


def submitted_reference_rule(running: Config) -> Callable[[str], bool]:
    """Which variables a config submitted over the admin API may reference.

    Those the running config already uses, and the names chain429 itself
    proposes (`CHAIN429_*`, `*_API_KEY`). Anything else could be any secret
    of the server's environment (`${AWS_SECRET_ACCESS_KEY}`), read back
    through a field the answer shows.
    """
    known = running.references

    def allowed(name: str) -> bool:
        return name in known or name.startswith("CHAIN429_") or name.endswith("_API_KEY")

    return allowed


class _References:
    """Resolves `${VAR}` references and remembers what they brought in.

    The names tell which variables a config uses (a config submitted to the
    admin API may reference only those, chain429.references); the values let
    every answer replace a resolved secret by its reference; the locations
    keep error messages from echoing a value that came from the environment.
    """

    def __init__(self, env: Mapping[str, str], allowed: Callable[[str], bool] | None) -> None:
        self.env = env
        self.allowed = allowed
        self.problems: list[tuple[Loc, str]] = []
        self.names: set[str] = set()
        self.values: dict[str, str] = {}  # resolved value -> "${NAME}"
        self.locs: set[Loc] = set()

    def substitute(self, value: Any, loc: Loc = ()) -> Any:
        if isinstance(value, dict):
            return {k: self.substitute(v, (*loc, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.substitute(v, (*loc, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        return _REFERENCE.sub(lambda match: self._replace(match, loc), value)

    def _replace(self, match: re.Match[str], loc: Loc) -> str:
        token, name, has_default, default = match.group(0), *match.groups()
        if token == "$${":
            return "${"
        if name is None:
            self.problems.append((loc, "malformed ${...} reference (write $${ for a literal ${)"))
            return token
        if self.allowed is not None and not self.allowed(name):
            self.problems.append(
                (
                    loc,
                    f"${{{name}}} may not be referenced here: a submitted config may use the "
                    "variables the running config uses, CHAIN429_* and *_API_KEY",
                )
            )
            return ""
        self.names.add(name)
        self.locs.add(loc)
        found = self.env.get(name)
        if has_default is not None and not found:  # shell semantics: unset or empty
            return str(default)
        if found is None:
            self.problems.append((loc, f"environment variable {name} is not set"))
            return ""
        self.values.setdefault(found, f"${{{name}}}")
        return found


def read_dotenv(path: Path) -> dict[str, str]:
    """Read `KEY=value` lines; a missing file is an empty environment."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            # Unquoted values may carry a trailing comment, as in shells.
            value = re.split(r"\s+#", value, maxsplit=1)[0].rstrip()
        values[key] = value
    return values


class _CyclicAlias(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


def _index_lines(
    node: yaml.Node,
    loc: Loc,
    lines: dict[Loc, int],
    problems: list[tuple[Loc, int, str]],
    active: set[int],
) -> None:
    # An alias inside its own anchor makes a cyclic document, which neither
    # substitution nor validation could walk.
    if id(node) in active:
        raise _CyclicAlias(node.start_mark.line + 1)
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = key_node.value, key_node.start_mark.line + 1
            # 429chain's YAML parser rejects duplicate keys; PyYAML would
            # silently keep the last one, hiding an edit that did nothing.
            if key in seen:
                problems.append(
                    ((*loc, key), line, f"duplicate key {key!r} (first on line {seen[key]})")
                )
            seen[key] = line
            lines[(*loc, key)] = line
            _index_lines(value_node, (*loc, key), lines, problems, active)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*loc, i)] = item.start_mark.line + 1
            _index_lines(item, (*loc, i), lines, problems, active)
    active.discard(id(node))


def _reader_issue(filename: str | None, text: str, exc: yaml.reader.ReaderError) -> ConfigIssue:
    """A character YAML does not allow, with its line and column."""
    before = text[: exc.position]
    line = before.count("\n") + 1
    column = exc.position - (before.rfind("\n") + 1) + 1
    character = exc.character if isinstance(exc.character, int) else ord(exc.character)
    message = (
        f"invalid YAML: column {column}: character U+{character:04X} is not allowed "
        "(a control character; remove it or write it as an escape in a double-quoted string)"
    )
    return ConfigIssue(filename, line, "", message)


def parse_config_text(
    text: str,
    *,
    filename: str | None = None,
    environ: Mapping[str, str] | None = None,
    dotenv_dir: Path | None = None,
    allowed_references: Callable[[str], bool] | None = None,
) -> Config:
    """Parse and validate a config document; raise ConfigError listing every problem.

    `allowed_references` limits which variables `${...}` may name (for configs
    that come from a caller rather than the owner's file).
    """

    def issue(line: int | None, loc: Loc, message: str) -> ConfigIssue:
        return ConfigIssue(filename, line, format_path(loc), message)

    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # a control character: checked before parsing
        raise ConfigError([_reader_issue(filename, text, exc)]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError([issue(None, (), "file is empty")])
        lines: dict[Loc, int] = {(): node.start_mark.line + 1}
        located: list[tuple[Loc, int, str]] = []
        _index_lines(node, (), lines, located, set())
        data = loader.construct_document(node)
    except _CyclicAlias as exc:
        raise ConfigError([issue(exc.line, (), "an alias may not refer to itself")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(str(p) for p in (exc.context, exc.problem) if p) or str(exc)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([issue(line, (), f"invalid YAML: {message}")]) from None
    except yaml.reader.ReaderError as exc:
        raise ConfigError([_reader_issue(filename, text, exc)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([issue(None, (), f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()

    if not isinstance(data, dict):
        raise ConfigError(
            [
                issue(
                    lines[()],
                    (),
                    "the top level must be a mapping with version, settings, providers and chains",
                )
            ]
        )

    issues = [issue(line, loc, message) for loc, line, message in located]
    if "version" not in data:
        # A file says which schema it is written for (429chain's files do):
        # `{}` or a stray YAML document is not a config that happens to be empty.
        issues.append(issue(lines[()], (), "missing required key 'version' (write version: 1)"))
    env: dict[str, str] = {}
    if dotenv_dir is not None:
        dotenv_path = dotenv_dir / ".env"
        try:
            env.update(read_dotenv(dotenv_path))
        except (OSError, UnicodeDecodeError) as exc:
            issues.append(ConfigIssue(str(dotenv_path), None, "", f"cannot read: {exc}"))
    env.update(os.environ if environ is None else environ)

    references = _References(env, allowed_references)
    data = references.substitute(data)
    env_problems = references.problems
    issues += [issue(line_for(loc, lines), loc, msg) for loc, msg in env_problems]

    config: Config | None = None
    try:
        config = Config.model_validate(data, context={_DEFER_CROSS_CHECKS: True})
    except ValidationError as exc:
        errors = exc.errors()
        for error in errors:
            # A list whose items all failed also fails its minimum length; the
            # item errors already say what is wrong.
            if error["type"] == "too_short" and any(
                other["loc"][: len(error["loc"])] == error["loc"] and other is not error
                for other in errors
            ):
                continue
            # A value from the environment may be a secret: never echo it.
            hide = any(error["loc"][: len(ref)] == ref for ref in references.locs)
            loc, message = pydantic_message(error, Config, hide_value=hide)
            # A failed substitution left an empty string; its type error is noise.
            if any(loc[: len(bad)] == bad for bad, _ in env_problems):
                continue
            issues.append(issue(line_for(loc, lines), loc, message))
    issues += [issue(line_for(loc, lines), loc, msg) for loc, msg in cross_check(data)]
    literal = literal_client_keys(data, references.locs)
    issues += [issue(line_for(loc, lines), loc, msg) for loc, msg in literal]

    if issues or config is None:
        issues.sort(key=lambda i: i.line or 0)
        # Cross-checks quote values ("no chain named ..."): not one from the environment.
        raise ConfigError(
            dataclasses.replace(i, message=redact(i.message, references.values)) for i in issues
        )
    config._references = frozenset(references.names)
    config._resolved = dict(references.values)
    return config


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Load a config file; `.env` next to it supplies variables the environment lacks."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(str(file), None, "", "file not found")]) from None
    except IsADirectoryError:
        raise ConfigError([ConfigIssue(str(file), None, "", "is a directory")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(str(file), None, "", f"cannot read: {exc}")]) from None
    return parse_config_text(text, filename=str(file), environ=environ, dotenv_dir=file.parent)


def find_config_path(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """Where the config is: argument, $CHAIN429_CONFIG, $CONFIG_PATH, ./chain429.yaml,
    then the user config dir. The last candidate is returned even if it does not
    exist, so the caller can say which file it looked for."""
    env = os.environ if environ is None else environ
    for candidate in (explicit, env.get("CHAIN429_CONFIG"), env.get("CONFIG_PATH")):
        if candidate:
            return Path(candidate).expanduser()
    local = Path.cwd() / "chain429.yaml"
    if local.is_file():
        return local
    import platformdirs  # only for this last candidate: `chain429 validate FILE` never needs it

    return platformdirs.user_config_path("chain429") / "chain429.yaml"
