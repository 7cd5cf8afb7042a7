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

from pydantic import Field

from chain429.config.sections import Model, PositiveCount, Usd

__all__ = ["Client"]


class Client(Model):
    """A caller of the proxy with its own key, chains, limits and paid budget."""

    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Unique; shown in the request log, stats, metrics and the "
        "`X-429chain-Client` header (letters, digits, `.`, `_`, `-`).",
    )
    key: str = Field(
        min_length=1,
        description="The key this client sends (`Authorization: Bearer <key>` or `x-api-key`); "
        "write it as `${VAR}` (`chain429 client add` and `rotate` keep it in `.env`).",
    )
    chains: tuple[str, ...] | None = Field(
        default=None,
        description="The chains this client may use; unset: every chain.",
    )
    requests_per_minute: PositiveCount | None = Field(
        default=None, description="This client's requests per minute, in a sliding 60 s window."
    )
    tokens_per_minute: PositiveCount | None = Field(
        default=None, description="This client's tokens per minute, counted from real usage."
    )
    requests_per_day: PositiveCount | None = Field(
        default=None, description="This client's requests per calendar day."
    )
    tokens_per_day: PositiveCount | None = Field(
        default=None, description="This client's tokens per calendar day, counted from real usage."
    )
    paid_budget_usd_per_day: Usd | None = Field(
        default=None,
        description="US dollars this client may spend on paid entries per calendar day; once "
        "spent, its requests skip paid entries (`skip:budget`). Unset: only "
        "`settings.paidBudgetUsdPerDay` applies.",
    )
