"""Which server the CLI talks to, with which key, and how its answers become one line.

The server: `--server URL`, else `$CHAIN429_SERVER`, else the current context
(`chain429 context use`), else the host and port of the config file the CLI
finds (a wildcard bind address means this machine).

The admin key: `$CHAIN429_ADMIN_KEY`, else the variable the context names in
`admin_key_env`, else the config file's first `adminKeys` entry, after `${VAR}`
substitution from the environment and the `.env` beside the file (where `init`
puts `CHAIN429_ADMIN_KEY`), else `CHAIN429_ADMIN_KEY` in that `.env`, else the
file's first `apiKeys` entry. Nobody has to export a key to use the CLI next to
its config. A key from the config file or its `.env` is only sent to the server
that file describes or to a loopback address, never to some other machine.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from chain429 import __version__

from .contexts import ContextError, check_server, current_context
from .options import ADMIN_KEY_ENV
from .output import fail

if TYPE_CHECKING:
    import httpx

# httpx, yaml and the config model are imported where they are used: the commands
# are declared (and `--help` shown) without them (see main.py on start-up).

SERVER_ENV = "CHAIN429_SERVER"
TIMEOUT_S = 10.0

_WILDCARD = {"0.0.0.0", "::", ""}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ClientError(Exception):
    """A server that cannot be reached, or that said no: one line, exit code 2."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.message, self.code = message, code


@dataclass(frozen=True)
class Target:
    base_url: str
    admin_key: str | None
    source: str  # how the server was chosen, for messages


@dataclass(frozen=True)
class _FileServer:
    base_url: str
    key: str | None


def _lenient_settings(path: Path) -> dict[str, Any]:
    """settings from a file too broken to load, so `reload` can still find its server."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    settings = data.get("settings") if isinstance(data, dict) else None
    return settings if isinstance(settings, dict) else {}


def _substitute(value: str, env: Mapping[str, str]) -> str | None:
    missing = False

    def replace(match: re.Match[str]) -> str:
        nonlocal missing
        found = env.get(match.group(1))
        if not found and match.group(2) is not None:
            return match.group(2)
        if found is None:
            missing = True
            return ""
        return found

    result = _REFERENCE.sub(replace, value)
    return None if missing or not result else result


def _dotenv(path: Path) -> dict[str, str]:
    from chain429.config.loader import read_dotenv

    try:
        return read_dotenv(path.parent / ".env")
    except (OSError, UnicodeDecodeError):
        return {}


def _from_file(path: Path) -> _FileServer:
    """Where the server that `path` configures listens, and the key to send it."""
    from chain429.config.errors import ConfigError
    from chain429.config.loader import load_config

    host, port, admin, proxy = "127.0.0.1", 3429, [], []
    dotenv = _dotenv(path)
    try:
        settings = load_config(path).settings
        host, port = settings.host, settings.port
        admin, proxy = list(settings.admin_keys), list(settings.api_keys)
    except ConfigError:
        raw = _lenient_settings(path)
        host = str(raw.get("host") or host)
        port = raw["port"] if isinstance(raw.get("port"), int) else port
        env = {**dotenv, **os.environ}
        found: dict[str, list[str]] = {}
        for name in ("adminKeys", "apiKeys"):
            values = raw.get(name)
            values = [values] if isinstance(values, str) else values
            if isinstance(values, list):
                found[name] = [
                    k for v in values if isinstance(v, str) and (k := _substitute(v, env))
                ]
        admin, proxy = found.get("adminKeys", []), found.get("apiKeys", [])
    keys = admin or ([dotenv[ADMIN_KEY_ENV]] if dotenv.get(ADMIN_KEY_ENV) else []) or proxy
    if host in _WILDCARD:
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return _FileServer(f"http://{host}:{port}", keys[0] if keys else None)


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in _LOOPBACK


def resolve_target(server_flag: str | None, config_path: Path | None = None) -> Target:
    """The server and admin key to use; see the module docstring for the order."""
    from chain429.config.loader import find_config_path

    path = config_path if config_path is not None else find_config_path(None)
    context = None
    if server_flag:
        base_url, source = server_flag, "--server"
    elif os.environ.get(SERVER_ENV):
        base_url, source = os.environ[SERVER_ENV], f"${SERVER_ENV}"
    else:
        try:
            context = current_context()
        except ContextError as err:
            raise ClientError(str(err)) from None
        if context is not None:
            base_url, source = context.server, f"context {context.name}"
        else:
            base_url, source = _from_file(path).base_url, str(path)
    try:
        base_url = check_server(base_url)
    except ContextError as err:
        raise ClientError(str(err)) from None

    key = os.environ.get(ADMIN_KEY_ENV) or None
    if key is None and context is not None and context.admin_key_env:
        key = os.environ.get(context.admin_key_env) or None
    if key is None:
        from_file = _from_file(path)
        if from_file.base_url == base_url or _is_loopback(base_url):
            key = from_file.key
    return Target(base_url, key, source)


def resolve_server(server_flag: str | None, config_path: Path | None) -> tuple[str, str | None]:
    """`(base_url, admin_key)` for the commands that talk to a server."""
    target = resolve_target(server_flag, config_path)
    return target.base_url, target.admin_key


def _connect_reason(err: httpx.HTTPError) -> str:
    text = str(err).lower()
    if "refused" in text:
        return "connection refused"
    if "name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    if "ssl" in text or "certificate" in text:
        return f"TLS failed ({err})"
    return str(err) or type(err).__name__


class AdminClient:
    """A small JSON client for the admin and stats API; failures are ClientError."""

    def __init__(
        self, base_url: str, admin_key: str | None = None, timeout: float = TIMEOUT_S
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        headers = {"user-agent": f"chain429-cli/{__version__}"}
        if admin_key:
            headers["authorization"] = f"Bearer {admin_key}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self.timeout = timeout

    @classmethod
    def connect(cls, server_flag: str | None, config_path: Path | None = None) -> AdminClient:
        target = resolve_target(server_flag, config_path)
        return cls(target.base_url, target.admin_key)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: str | bytes | None = None,
        content_type: str = "application/json",
        accept: tuple[int, ...] = (200,),
    ) -> tuple[int, Any]:
        """`(status, JSON body)`; a status outside `accept` is a ClientError with its message."""
        import httpx

        query = {k: v for k, v in (params or {}).items() if v is not None}
        # The server takes a body only with its declared media type (chain429.server.guard).
        headers = {"content-type": content_type} if content is not None else None
        try:
            response = self._http.request(
                method, path, params=query, content=content, headers=headers
            )
        except httpx.TimeoutException:
            raise ClientError(
                f"chain429 server at {self.base_url} did not answer within {self.timeout:g}s"
            ) from None
        except (httpx.ConnectError, httpx.RemoteProtocolError) as err:
            raise ClientError(
                f"no chain429 server at {self.base_url}: {_connect_reason(err)}"
            ) from None
        except httpx.HTTPError as err:
            raise ClientError(f"cannot talk to {self.base_url}: {err}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code in accept and body is not None:
            return response.status_code, body
        raise ClientError(self._error_message(response, body))

    def _error_message(self, response: httpx.Response, body: Any) -> str:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and error.get("message"):
            message = str(error["message"])
            if response.status_code in (401, 403):
                message += (
                    f" (set ${ADMIN_KEY_ENV}, or {ADMIN_KEY_ENV} in the .env beside the "
                    "config, or use a context with --admin-key-env)"
                )
            return message
        if response.status_code == 404:
            where = f"{self.base_url}{response.url.path}"
            return f"not a chain429 server, or an older one: 404 for {where}"
        return f"unexpected answer from {self.base_url}: HTTP {response.status_code}"

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)[1]

    def post(self, path: str, content: str | bytes | None = None) -> Any:
        return self.request("POST", path, content=content)[1]


P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a ClientError from a command into one line on stderr and its exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ClientError as err:
            raise fail(err.message, err.code) from None

    return wrapper
