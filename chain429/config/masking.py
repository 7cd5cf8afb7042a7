"""How secrets are shown: one set of rules for every place that shows config.

The admin API's config view, the semantic and unified diffs, and the CLI's
`config show` all mask with these functions, so a secret hidden in one is
hidden in all. A `${VAR}` reference reveals nothing and is shown as written;
a literal keeps at most its first 3 and last 4 characters. A value that came
from a reference is shown as that reference (`redact`), wherever it was put.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, overload

ELLIPSIS = "\u2026"

_BARE_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-)?\}")  # carries no literal
_DEFAULTED_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}")
_SCHEME_ONLY = re.compile(r"(?i)\s*(bearer|basic|token|bot)?\s*")
SECRET_NAME = re.compile(r"(?i)auth|key|token|secret|passw|cookie|session|signature|^sig$")


def is_reference(value: str) -> bool:
    # "Bearer ${TOKEN}" says where the secret is and reveals nothing; `$${X}` (a
    # literal "${X}") leaves a "$" behind, so it is masked like any literal.
    return _SCHEME_ONLY.fullmatch(_BARE_REF.sub("", value)) is not None


@overload
def mask_secret(value: str) -> str: ...
@overload
def mask_secret(value: None) -> None: ...
def mask_secret(value: str | None) -> str | None:
    """`${VAR}` as is; a literal as "sk-…abcd", "…abcd" under 12 chars, "…" under 8."""
    if not value or is_reference(value):
        return value
    if ref := _DEFAULTED_REF.fullmatch(value):  # the default is a literal secret
        return f"${{{ref[1]}:-{mask_secret(ref[2])}}}"
    if len(value) >= 12:
        return value[:3] + ELLIPSIS + value[-4:]
    # The last four characters of a very short secret would be most of it.
    return ELLIPSIS + value[-4:] if len(value) >= 8 else ELLIPSIS


# Below this length a resolved value is replaced only where it is a whole
# value: "true" or "8080" inside other text is more likely a coincidence.
_REDACT_SUBSTRINGS_FROM = 8


def redact(value: Any, resolved: Mapping[str, str]) -> Any:
    """`value` with every value a `${VAR}` resolved to shown as its reference again.

    `resolved` maps resolved values to references (`Config.resolved_values`).
    Answers that show a loaded config (diffs, errors, the file-less config
    view) pass through here, so no variable's value leaves the server, even
    one placed in a field that is not secret-looking.
    """
    if not resolved:
        return value
    if isinstance(value, str):
        if value in resolved:
            return resolved[value]
        for secret in sorted(resolved, key=len, reverse=True):
            if len(secret) >= _REDACT_SUBSTRINGS_FROM and secret in value:
                value = value.replace(secret, resolved[secret])
        return value
    if isinstance(value, Mapping):
        return {k: redact(v, resolved) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v, resolved) for v in value)
    return value


def mask_any(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: mask_any(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_any(v) for v in value]
    return value if value is None or isinstance(value, bool) else mask_secret(str(value))


def mask_url(value: Any) -> Any:
    """The password and secret-looking query values of a URL or libpq DSN, masked."""
    if not isinstance(value, str) or is_reference(value):
        return mask_any(value)
    start = value.find("://") + 3
    if start < 3:  # not a URL (a libpq "host=... password=..."?): hide all of it
        return mask_secret(value)
    # Look for "@" past the path too: an unencoded "/" in a password must not
    # hide it. Overmasking an odd URL is fine; leaking is not.
    at, tail = value.rfind("@", start), value[start:]
    user, colon, password = value[start:at].partition(":")
    if at >= 0 and colon and password:
        # A password needs no telling apart, unlike API keys: none of it is shown.
        tail = f"{user}:{ELLIPSIS}{value[at:]}"
    query = r"([?&;]([^=&#;]*)=)([^&#;]*)"
    return value[:start] + re.sub(
        query, lambda m: m[1] + (mask_secret(m[3]) if SECRET_NAME.search(m[2]) else m[3]), tail
    )


def mask_headers(value: Any) -> Any:
    if not isinstance(value, dict):
        return mask_any(value)
    secret = {k for k, v in value.items() if SECRET_NAME.search(str(k)) or not isinstance(v, str)}
    return {k: mask_any(v) if k in secret else v for k, v in value.items()}


# Secret fields and how each is shown. The same functions recognise a masked
# value sent back (GET, edit a form, PUT), which then keeps the real secret.
PROVIDER_SECRETS = {"apiKey": mask_any, "baseUrl": mask_url, "headers": mask_headers}
SETTINGS_SECRETS = {"apiKeys": mask_any, "adminKeys": mask_any, "databaseUrl": mask_url}
CLIENT_SECRETS = {"key": mask_any}


def mask_fields(item: Any, fields: Mapping[str, Callable[[Any], Any]]) -> Any:
    if not isinstance(item, dict):  # malformed: show nothing literal
        return mask_any(item)
    return {k: fields[k](v) if k in fields else v for k, v in item.items()}


def mask_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """A raw config document (camelCase, as in YAML) with every secret masked."""
    masked = dict(data)
    if masked.get("settings") is not None:  # a malformed section is masked whole
        masked["settings"] = mask_fields(masked["settings"], SETTINGS_SECRETS)
    if isinstance(masked.get("providers"), list):
        masked["providers"] = [mask_fields(p, PROVIDER_SECRETS) for p in masked["providers"]]
    if isinstance(masked.get("clients"), list):
        masked["clients"] = [mask_fields(c, CLIENT_SECRETS) for c in masked["clients"]]
    return masked


_SECRETS_OF = {"provider": PROVIDER_SECRETS, "client": CLIENT_SECRETS}


def field_masker(section: str, path: str) -> Callable[[Any], Any] | None:
    """How to show one field of a `provider`, a `client` or of `settings` (a dotted
    camelCase path)."""
    secrets = _SECRETS_OF.get(section, SETTINGS_SECRETS)
    if path in secrets:
        return secrets[path]
    name, _, rest = path.partition(".")
    if section == "provider" and name == "headers" and rest and SECRET_NAME.search(rest):
        return mask_any
    return None
