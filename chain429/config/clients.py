"""The `clients:` section: one entry per person or app that calls the proxy.

`settings.apiKeys` gives every caller the same key and the same treatment. A
client has its own key (written as `${VAR}`, like a provider key, so the file
holds no secret), the chains it may use, limits of its own that are counted
before any upstream quota is touched, and a cap on what it may spend on paid
entries per day. Requests are attributed to the client's `name` in the
request log, stats, metrics and the `X-429chain-Client` header; the key itself
never appears anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import Field, field_validator

from chain429.config.sections import Model, PositiveCount, Usd

__all__ = ["KEY_MIN_LENGTH", "Client", "key_variable", "no_such_client"]

# A client key is a password a person or an app sends; `chain429 client add`
# makes one of 48 characters. A short one could be guessed.
KEY_MIN_LENGTH = 16


def key_variable(name: str) -> str:
    """The `.env` variable `chain429 client add` keeps a client's key in:
    `CHAIN429_CLIENT_<NAME>_KEY`, the name upper-cased with `.` and `-` as `_`."""
    return f"CHAIN429_CLIENT_{re.sub(r'[^A-Za-z0-9]', '_', name).upper()}_KEY"


def no_such_client(name: str, clients: Iterable[Client | str]) -> str:
    """What the CLI and the admin API say of a name no client has, and which ones exist."""
    names = ", ".join(c if isinstance(c, str) else c.name for c in clients) or "none"
    return f"no client named {name!r} (clients: {names})"


class Client(Model):
    """A caller of the proxy with its own key, chains, limits and paid budget."""

    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Unique; shown in the request log, stats, metrics and the "
        "`X-429chain-Client` header (letters, digits, `.`, `_`, `-`).",
    )
    # Checked by a validator rather than Field constraints: the file's JSON Schema
    # (editors) sees `${VAR}` there, which a length or pattern would flag.
    key: str = Field(
        description="The key this client sends (`Authorization: Bearer <key>` or `x-api-key`), "
        f"at least {KEY_MIN_LENGTH} characters; in a file it must be a `${{VAR}}` reference "
        "(`chain429 client add` and `rotate` keep it in `.env`). It may not be another "
        "client's key, nor one of `apiKeys` or `adminKeys`.",
    )
    chains: tuple[str, ...] | None = Field(
        default=None,
        min_length=1,
        description="The chains this client may use: it may name them, or an entry model all "
        "of whose entries are in them; another chain is a 403 `model_not_allowed`, and "
        "`/v1/models` lists only these. Unset: every chain.",
    )
    requests_per_minute: PositiveCount | None = Field(
        default=None,
        description="This client's requests per minute, in a sliding 60 s window. Over it: a "
        "429 `client_rate_limited` with `Retry-After`, before any provider is asked.",
    )
    tokens_per_minute: PositiveCount | None = Field(
        default=None,
        description="This client's tokens per minute (sliding 60 s): each request reserves its "
        "estimate (prompt + `max_tokens`), settled with the provider's usage once it is in.",
    )
    requests_per_day: PositiveCount | None = Field(
        default=None,
        description="This client's requests per calendar day (`settings.timeZone`).",
    )
    tokens_per_day: PositiveCount | None = Field(
        default=None,
        description="This client's tokens per calendar day (`settings.timeZone`), counted as "
        "`tokensPerMinute` is.",
    )
    paid_budget_usd_per_day: Usd | None = Field(
        default=None,
        description="US dollars this client may spend on paid entries per calendar day; once "
        "spent, its requests skip paid entries (`skip:budget`). Unset: only "
        "`settings.paidBudgetUsdPerDay` applies.",
    )

    @field_validator("key")
    @classmethod
    def _strong_key(cls, value: str) -> str:
        if len(value) < KEY_MIN_LENGTH or any(c.isspace() for c in value):
            raise ValueError(
                f"a client key needs at least {KEY_MIN_LENGTH} characters and no spaces "
                "(`chain429 client add` makes one of 48)"
            )
        return value
