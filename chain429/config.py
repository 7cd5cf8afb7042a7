"""The config file: frozen models, `${VAR}` substitution, and where errors are.

The schema is a superset of 429chain's (camelCase keys, `version: 1`), so a
429chain config loads unchanged. Every problem is reported as a `ConfigIssue`
with file, line and field path, all of them at once, so a user fixes a file in
one pass instead of one error per restart.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

import platformdirs
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
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

from chain429.addresses import forbidden_upstream, host_of
from chain429.config_errors import (
    FIELD_CTX,
    ConfigError,
    ConfigIssue,
    Loc,
    format_path,
    line_for,
    pydantic_message,
)
from chain429.masking import redact
from chain429.presets import PRESETS, PROVIDER_TYPES

# The request log's buffer (settings.logBufferSize): 10,000 records of ~1-2 kB
# each ride out a database outage of 100 s at 100 requests/s.
LOG_BUFFER_SIZE = 10_000

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
    "references_in",
    "submitted_reference_rule",
]


def _no_number(value: Any) -> Any:
    # `paid: 1` is a typo or a JSON client's mistake; a string (from a ${VAR},
    # or YAML's own yes/no) is still read the lenient way.
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"expected true or false (got {value!r})")
    return value


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number (got {str(value).lower()})")
    return value


# Lenient about strings, since `${VAR}` always yields one, but not about
# numbers for flags or flags for numbers.
Flag = Annotated[bool, BeforeValidator(_no_number)]
Count = Annotated[int, BeforeValidator(_no_bool)]


class Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, alias_generator=to_camel
    )


class RateLimits(Model):
    requests_per_minute: Count | None = Field(default=None, ge=1)
    tokens_per_minute: Count | None = Field(default=None, ge=1)
    requests_per_day: Count | None = Field(default=None, ge=1)
    tokens_per_day: Count | None = Field(default=None, ge=1)
    concurrent_requests: Count | None = Field(default=None, ge=1)


class Settings(Model):
    port: Count = Field(default=3429, ge=1, le=65535)
    host: str = "127.0.0.1"
    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    default_chain: str | None = None
    log_level: Literal["trace", "debug", "info", "warn", "error", "fatal"] = "info"
    cooldown_default_ms: Count = Field(default=60000, ge=0)
    request_timeout_ms: Count = Field(default=30000, gt=0)
    connect_timeout_ms: Count = Field(default=5000, gt=0)
    payment_cooldown_ms: Count = Field(default=300000, ge=0)
    unhealthy_cooldown_ms: Count = Field(default=600000, ge=0)
    normalize_responses: Flag = False
    strict_models: Flag = False
    max_body_bytes: Count = Field(default=10 * 1024 * 1024, ge=1)
    access_log: Flag = False
    stream_idle_timeout_ms: Count = Field(default=20000, gt=0)
    first_token_timeout_ms: Count = Field(default=15000, gt=0)
    # Providers' answers are bounded. A body (and a stream before its first
    # token) over this many bytes, on the wire or after gzip/deflate, falls
    # through as `upstream_too_large`; it also caps the answer text a stream keeps.
    max_upstream_body_bytes: Count = Field(default=32 * 1024 * 1024, ge=1024)
    # One SSE event (or line) over this: before the first token it falls
    # through (`upstream_too_large`), after it the stream ends `stream_interrupted`.
    max_sse_event_bytes: Count = Field(default=8 * 1024 * 1024, ge=1024)
    # A stream still going this long after its first token ends `stream_too_long`.
    stream_max_duration_ms: Count = Field(default=30 * 60 * 1000, gt=0)
    db_path: str | None = None
    database_url: str | None = None
    mid_stream_failure_threshold: Count = Field(default=3, ge=1)
    mid_stream_cooldown_ms: Count = Field(default=120000, ge=0)
    mid_stream_cooldown_max_ms: Count = Field(default=1800000, ge=0)
    queue_mode: Flag = False
    queue_max_wait_ms: Count = Field(default=300000, ge=0)
    queue_max_size: Count = Field(default=100, ge=1)
    # After the first token: "error" ends the client's stream with an error
    # event; "continue" finishes the answer on an entry that supports prefill.
    mid_stream: Literal["error", "continue"] = "error"
    # Before spilling to a paid entry, wait this long for a free one known to recover.
    wait_before_paid_ms: Count = Field(default=0, ge=0)
    # A 503 whose earliest recovery is further away than this tells SDKs not to
    # retry (`x-should-retry: false`); a sooner one invites the retry that
    # lands after the recovery. OpenAI's SDKs otherwise wait up to minutes.
    client_retry_max_wait_ms: Count = Field(default=10000, ge=0)
    # The request log: where it lives is databaseUrl (or 429chain's dbPath).
    log_retention_days: Count = Field(default=30, ge=0)  # 0 keeps everything
    # Request records accepted and not yet committed, at most (queued, or in a
    # batch being retried while the database is down); more are dropped, counted.
    log_buffer_size: Count = Field(default=LOG_BUFFER_SIZE, ge=1)
    log_format: Literal["text", "json"] = "text"
    metrics_public: Flag = False  # serve /metrics without a key
    # Browser safety (docs/security.md). Host names the server answers to besides
    # the loopback ones: checked on every request when no keys are configured,
    # and only when this list is set otherwise (a server behind a load balancer).
    allowed_hosts: tuple[str, ...] = ()
    # Web origins whose pages may call this server (CORS); none by default.
    cors_origins: tuple[str, ...] = ()
    # Link-local / cloud-metadata addresses, networks or names a provider's
    # baseUrl may use all the same (refused by default: chain429.addresses).
    allow_private_upstreams: tuple[str, ...] = ()
    # Client connections (chain429/connections.py). Total deadlines, not reset by
    # each byte received: a client trickling bytes cannot hold a connection.
    client_header_timeout_ms: Count = Field(default=10000, gt=0)  # accept/first byte -> headers
    client_body_timeout_ms: Count = Field(default=60000, gt=0)  # end of headers -> whole body
    # An idle keep-alive connection closes after this. Clients should drop idle
    # connections sooner (httpx: 5 s), and so should a load balancer in front.
    keep_alive_timeout_ms: Count = Field(default=15000, gt=0)
    # Open client connections; more are answered 503 and closed at once.
    max_connections: Count = Field(default=1024, ge=1)

    # A list whose items are all commented out parses as null; that means "none".
    @field_validator(
        "api_keys",
        "admin_keys",
        "allowed_hosts",
        "cors_origins",
        "allow_private_upstreams",
        mode="before",
    )
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return () if value is None else value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            parts = urlsplit(origin)
            if origin != "*" and (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
            ):
                raise ValueError(
                    f"{origin!r} is not an origin: write scheme://host[:port], or * for any"
                )
        return tuple(origin.rstrip("/").lower() for origin in value)


class Provider(Model):
    id: str = Field(min_length=1)
    name: str | None = None
    type: str
    api_key: str | None = None
    base_url: str | None = None
    timeout: Count | None = Field(default=None, ge=1)
    rate_limits: RateLimits | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    paid: Flag = False
    supports_prefill: Flag = False
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
    paid: Flag | None = None
    supports_prefill: Flag | None = None


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
    # Set by the loader: the variables the file references, and each resolved
    # value with the reference it came from (so answers can show the reference).
    _references: frozenset[str] = PrivateAttr(default_factory=frozenset)
    _resolved: dict[str, str] = PrivateAttr(default_factory=dict)

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

    @property
    def references(self) -> frozenset[str]:
        """The environment variables this config's file references."""
        return self._references

    @property
    def resolved_values(self) -> Mapping[str, str]:
        """Each value a `${VAR}` resolved to, mapped to its reference."""
        return self._resolved


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
    settings = settings if isinstance(settings, dict) else {}
    key = "defaultChain" if "defaultChain" in settings else "default_chain"
    default = settings.get(key)
    if isinstance(default, str) and default not in chain_names:
        hint = _hint(default, list(chain_names), "chains")
        problems.append((("settings", key), f"no chain named {default!r}{hint}"))
    problems += _address_problems(data, settings)
    return problems


def _setting(settings: dict[str, Any], name: str) -> Any:
    """A setting from loosely-typed data, under its camelCase or snake_case key."""
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
    return settings.get(name, settings.get(snake))


def _address_problems(data: dict[str, Any], settings: dict[str, Any]) -> list[tuple[Loc, str]]:
    """Provider URLs that would hand a key to a metadata service; origins that open the server."""
    problems: list[tuple[Loc, str]] = []
    allowed = _setting(settings, "allowPrivateUpstreams")
    allowed = [a for a in allowed if isinstance(a, str)] if isinstance(allowed, list) else []
    for i, provider in _items(data.get("providers")):
        url = provider.get("baseUrl", provider.get("base_url"))
        if isinstance(url, str):
            reason = forbidden_upstream(host_of(url), allowed)
            if reason is not None:
                host = host_of(url)
                problems.append(
                    (
                        ("providers", i, "baseUrl"),
                        f"{host} {reason}; list it in settings.allowPrivateUpstreams "
                        "if this provider really lives there",
                    )
                )
    origins = _setting(settings, "corsOrigins")
    if isinstance(origins, list) and "*" in origins and not _setting(settings, "apiKeys"):
        problems.append(
            (
                ("settings", "corsOrigins"),
                "'*' lets every web page call this server; it needs settings.apiKeys",
            )
        )
    return problems


# `$${` is an escape for a literal `${`; any other `${` must be a well-formed
# reference, because a typo left in place would be sent upstream as an API key.
_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}|\$\{")


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
    return platformdirs.user_config_path("chain429") / "chain429.yaml"
