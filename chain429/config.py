"""The config file: frozen models, `${VAR}` substitution, and where errors are.

The schema is a superset of 429chain's (camelCase keys, `version: 1`), so a
429chain config loads unchanged. Every problem is reported as a `ConfigIssue`
with file, line and field path, all of them at once, so a user fixes a file in
one pass instead of one error per restart.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import platformdirs
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from chain429.config_errors import (
    FIELD_CTX,
    ConfigError,
    ConfigIssue,
    Loc,
    format_path,
    line_for,
    pydantic_message,
)
from chain429.presets import PRESETS, PROVIDER_TYPES

__all__ = [
    "Chain",
    "ChainEntry",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "Provider",
    "RateLimits",
    "Settings",
    "find_config_path",
    "load_config",
    "parse_config_text",
    "read_dotenv",
]


class Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, alias_generator=to_camel
    )


class RateLimits(Model):
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    requests_per_day: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)
    concurrent_requests: int | None = Field(default=None, ge=1)


class Settings(Model):
    port: int = Field(default=3429, ge=1, le=65535)
    host: str = "127.0.0.1"
    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    default_chain: str | None = None
    log_level: Literal["trace", "debug", "info", "warn", "error", "fatal"] = "info"
    cooldown_default_ms: int = Field(default=60000, ge=0)
    request_timeout_ms: int = Field(default=30000, gt=0)
    connect_timeout_ms: int = Field(default=5000, gt=0)
    payment_cooldown_ms: int = Field(default=300000, ge=0)
    unhealthy_cooldown_ms: int = Field(default=600000, ge=0)
    normalize_responses: bool = False
    strict_models: bool = False
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    access_log: bool = False
    stream_idle_timeout_ms: int = Field(default=20000, gt=0)
    first_token_timeout_ms: int = Field(default=15000, gt=0)
    # Providers' answers are bounded. A body (and a stream before its first
    # token) over this many bytes, on the wire or after gzip/deflate, falls
    # through as `upstream_too_large`; it also caps the answer text a stream keeps.
    max_upstream_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # One SSE event (or line) over this: before the first token it falls
    # through (`upstream_too_large`), after it the stream ends `stream_interrupted`.
    max_sse_event_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # A stream still going this long after its first token ends `stream_too_long`.
    stream_max_duration_ms: int = Field(default=30 * 60 * 1000, gt=0)
    db_path: str | None = None
    database_url: str | None = None
    mid_stream_failure_threshold: int = Field(default=3, ge=1)
    mid_stream_cooldown_ms: int = Field(default=120000, ge=0)
    mid_stream_cooldown_max_ms: int = Field(default=1800000, ge=0)
    queue_mode: bool = False
    queue_max_wait_ms: int = Field(default=300000, ge=0)
    queue_max_size: int = Field(default=100, ge=1)
    # After the first token: "error" ends the client's stream with an error
    # event; "continue" finishes the answer on an entry that supports prefill.
    mid_stream: Literal["error", "continue"] = "error"
    # Before spilling to a paid entry, wait this long for a free one known to recover.
    wait_before_paid_ms: int = Field(default=0, ge=0)
    # The request log: where it lives is databaseUrl (or 429chain's dbPath).
    log_retention_days: int = Field(default=30, ge=0)  # 0 keeps everything
    log_format: Literal["text", "json"] = "text"
    metrics_public: bool = False  # serve /metrics without a key

    # A list whose items are all commented out parses as null; that means "none".
    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return () if value is None else value


class Provider(Model):
    id: str = Field(min_length=1)
    name: str | None = None
    type: str
    api_key: str | None = None
    base_url: str | None = None
    timeout: int | None = Field(default=None, ge=1)
    rate_limits: RateLimits | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    paid: bool = False
    supports_prefill: bool = False
    # Overrides the preset's quota scope: "model", "account", or "free"
    # (OpenRouter's: `:free` models share one account-wide quota).
    quota_scope: Literal["model", "account", "free"] | None = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(
                f"unknown provider type {value!r}; valid types: {', '.join(PROVIDER_TYPES)}"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"must be an http:// or https:// URL (got {value!r})")
        return value

    @field_validator("headers", mode="before")
    @classmethod
    def _null_headers(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _base_url_known(self) -> Self:
        if self.base_url is None and PRESETS[self.type].default_base_url is None:
            raise PydanticCustomError(
                "base_url_required",
                "required when type is {type} (it has no default URL)",
                {"type": self.type, FIELD_CTX: "baseUrl"},
            )
        return self

    @property
    def display_name(self) -> str:
        return self.name or self.id

    @property
    def resolved_base_url(self) -> str:
        url = self.base_url or PRESETS[self.type].default_base_url
        if url is None:  # unreachable: _base_url_known rejects this at load
            raise ValueError(f"provider {self.id!r} has no baseUrl")
        return url.rstrip("/")


class ChainEntry(Model):
    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    rate_limits: RateLimits | None = None
    paid: bool | None = None
    supports_prefill: bool | None = None


class Chain(Model):
    name: str = Field(min_length=1)
    entries: tuple[ChainEntry, ...] = Field(min_length=1)


# Validation context key: the loader runs the cross-field checks itself, on
# the raw document, so it can report them with paths next to field errors.
_DEFER_CROSS_CHECKS = "chain429.defer_cross_checks"


class Config(Model):
    version: Literal[1] = 1
    settings: Settings = Field(default_factory=Settings)
    providers: tuple[Provider, ...] = ()
    chains: tuple[Chain, ...] = ()

    _providers_by_id: dict[str, Provider] = PrivateAttr(default_factory=dict)
    _chains_by_name: dict[str, Chain] = PrivateAttr(default_factory=dict)

    @field_validator("settings", "providers", "chains", mode="before")
    @classmethod
    def _null_section(cls, value: Any, info: ValidationInfo) -> Any:
        # A section with every line commented out parses as null.
        if value is None:
            return {} if info.field_name == "settings" else ()
        return value

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Self:
        if not (info.context or {}).get(_DEFER_CROSS_CHECKS):
            problems = cross_check(self.model_dump(by_alias=True))
            if problems:
                raise ValueError("; ".join(f"{format_path(loc)}: {msg}" for loc, msg in problems))
        return self

    def model_post_init(self, context: Any, /) -> None:
        for provider in self.providers:
            self._providers_by_id.setdefault(provider.id, provider)
        for chain in self.chains:
            self._chains_by_name.setdefault(chain.name, chain)

    def provider(self, id: str) -> Provider:
        return self._providers_by_id[id]

    def chain(self, name: str) -> Chain | None:
        return self._chains_by_name.get(name)


def _items(value: Any) -> list[tuple[int, dict[str, Any]]]:
    if not isinstance(value, list | tuple):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def _hint(name: str, known: list[str], noun: str) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; {noun}: {', '.join(known)}" if known else f"; there are no {noun}"


def cross_check(data: Any) -> list[tuple[Loc, str]]:
    """References between sections, checked on loosely-typed data.

    Works on the raw document so these problems are reported in the same pass
    as type errors elsewhere; values of the wrong type are skipped here because
    the model validation already reports them.
    """
    if not isinstance(data, dict):
        return []
    problems: list[tuple[Loc, str]] = []
    provider_ids: dict[str, int] = {}
    for i, provider in _items(data.get("providers")):
        pid = provider.get("id")
        if not isinstance(pid, str):
            continue
        if pid in provider_ids:
            first = format_path(("providers", provider_ids[pid]))
            problems.append(
                (("providers", i, "id"), f"duplicate provider id {pid!r} (already used by {first})")
            )
        else:
            provider_ids[pid] = i
    chain_names: dict[str, int] = {}
    for i, chain in _items(data.get("chains")):
        name = chain.get("name")
        if isinstance(name, str):
            if name in chain_names:
                first = format_path(("chains", chain_names[name]))
                problems.append(
                    (
                        ("chains", i, "name"),
                        f"duplicate chain name {name!r} (already used by {first})",
                    )
                )
            else:
                chain_names[name] = i
        for j, entry in _items(chain.get("entries")):
            ref = entry.get("provider")
            if isinstance(ref, str) and ref and ref not in provider_ids:
                hint = _hint(ref, list(provider_ids), "providers")
                problems.append(
                    (("chains", i, "entries", j, "provider"), f"no provider with id {ref!r}{hint}")
                )
    settings = data.get("settings")
    if isinstance(settings, dict):
        key = "defaultChain" if "defaultChain" in settings else "default_chain"
        default = settings.get(key)
        if isinstance(default, str) and default not in chain_names:
            hint = _hint(default, list(chain_names), "chains")
            problems.append((("settings", key), f"no chain named {default!r}{hint}"))
    return problems


# `$${` is an escape for a literal `${`; any other `${` must be a well-formed
# reference, because a typo left in place would be sent upstream as an API key.
_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}|\$\{")


def _substitute(
    value: Any, loc: Loc, env: Mapping[str, str], problems: list[tuple[Loc, str]]
) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, (*loc, k), env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*loc, i), env, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        token, name, has_default, default = match.group(0), *match.groups()
        if token == "$${":
            return "${"
        if name is None:
            problems.append((loc, "malformed ${...} reference (write $${ for a literal ${)"))
            return token
        found = env.get(name)
        if has_default is not None and not found:  # shell semantics: unset or empty
            return str(default)
        if found is None:
            problems.append((loc, f"environment variable {name} is not set"))
            return ""
        return found

    return _REFERENCE.sub(replace, value)


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


def parse_config_text(
    text: str,
    *,
    filename: str | None = None,
    environ: Mapping[str, str] | None = None,
    dotenv_dir: Path | None = None,
) -> Config:
    """Parse and validate a config document; raise ConfigError listing every problem."""

    def issue(line: int | None, loc: Loc, message: str) -> ConfigIssue:
        return ConfigIssue(filename, line, format_path(loc), message)

    loader = yaml.SafeLoader(text)
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
    env: dict[str, str] = {}
    if dotenv_dir is not None:
        dotenv_path = dotenv_dir / ".env"
        try:
            env.update(read_dotenv(dotenv_path))
        except (OSError, UnicodeDecodeError) as exc:
            issues.append(ConfigIssue(str(dotenv_path), None, "", f"cannot read: {exc}"))
    env.update(os.environ if environ is None else environ)

    env_problems: list[tuple[Loc, str]] = []
    data = _substitute(data, (), env, env_problems)
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
            loc, message = pydantic_message(error, Config)
            # A failed substitution left an empty string; its type error is noise.
            if any(loc[: len(bad)] == bad for bad, _ in env_problems):
                continue
            issues.append(issue(line_for(loc, lines), loc, message))
    issues += [issue(line_for(loc, lines), loc, msg) for loc, msg in cross_check(data)]

    if issues or config is None:
        issues.sort(key=lambda i: i.line or 0)
        raise ConfigError(issues)
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
    return platformdirs.user_config_path("chain429") / "chain429.yaml"
