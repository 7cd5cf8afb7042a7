"""Checks that span sections of a config: references between them, and addresses.

A chain entry must name a provider, `defaultChain`, each alias and a
client's `chains` chains; ids and names are unique, and an alias is not a
chain's name (a request naming it would mean two chains); every key that
admits a caller (a client's, `apiKeys`, `adminKeys`) is its own, so a key
names one caller and one scope; a provider's URL may not point at a cloud
metadata service; under a paid budget every paid entry has a price. They run
on the loosely-typed document, not the model, so the loader
(`chain429.config.loader`) reports them with lines in the same pass as every
type error; the model (`Config`) runs them too when it is built in code.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import TypeAdapter, ValidationError

from chain429.config.errors import Loc, format_path
from chain429.config.sections import Flag
from chain429.upstream.addresses import forbidden_upstream, host_of

__all__ = ["cross_check", "literal_client_keys"]


def _items(value: Any) -> list[tuple[int, dict[str, Any]]]:
    if not isinstance(value, list | tuple):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def _hint(name: str, known: list[str], noun: str) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; {noun}: {', '.join(known)}" if known else f"; there are no {noun}"


def _unique(seen: dict[str, int], value: str, loc: Loc, noun: str) -> list[tuple[Loc, str]]:
    """The problem of a second `value` in a section (`loc`: section, index, key), or
    none, remembering the first's index in `seen`."""
    if value in seen:
        first = format_path((loc[0], seen[value]))
        return [(loc, f"duplicate {noun} {value!r} (already used by {first})")]
    seen[value] = int(loc[1])
    return []


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
        problems += _unique(provider_ids, pid, ("providers", i, "id"), "provider id")
    chain_names: dict[str, int] = {}
    for i, chain in _items(data.get("chains")):
        name = chain.get("name")
        if isinstance(name, str):
            problems += _unique(chain_names, name, ("chains", i, "name"), "chain name")
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
    problems += _alias_problems(data.get("aliases"), list(chain_names))
    problems += _client_problems(data, settings, list(chain_names))
    problems += _address_problems(data, settings)
    problems += _unpriced_paid_entries(data, settings)
    return problems


def _alias_problems(aliases: Any, chains: list[str]) -> list[tuple[Loc, str]]:
    """Each alias names a chain, and is not a chain's name itself."""
    problems: list[tuple[Loc, str]] = []
    for alias, chain in aliases.items() if isinstance(aliases, dict) else ():
        if not isinstance(alias, str) or not isinstance(chain, str):
            continue
        if alias in chains:
            message = (
                f"{alias!r} is a chain's name: a request naming it gets that chain, so the "
                "alias would never be used; remove it, or rename the chain"
            )
            problems.append((("aliases", alias), message))
        elif chain and chain not in chains:
            problems.append(
                (("aliases", alias), f"no chain named {chain!r}{_hint(chain, chains, 'chains')}")
            )
    return problems


def _client_problems(
    data: dict[str, Any], settings: dict[str, Any], chains: list[str]
) -> list[tuple[Loc, str]]:
    """Client names unique, their chains real, their keys nobody else's.

    A message never quotes a key: it says whose key it is the same as.
    """
    problems: list[tuple[Loc, str]] = []
    holders: dict[str, str] = {}  # key -> who has it first, as a path
    for setting in ("adminKeys", "apiKeys"):
        keys = _setting(settings, setting)
        for j, key in enumerate(keys if isinstance(keys, list) else ()):
            if isinstance(key, str):
                holders.setdefault(key, format_path(("settings", setting, j)))
    names: dict[str, int] = {}
    for i, client in _items(data.get("clients")):
        name = client.get("name")
        if isinstance(name, str):
            problems += _unique(names, name, ("clients", i, "name"), "client name")
        allowed = client.get("chains")
        for j, chain in enumerate(allowed if isinstance(allowed, list | tuple) else ()):
            if isinstance(chain, str) and chain not in chains:
                problems.append(
                    (
                        ("clients", i, "chains", j),
                        f"no chain named {chain!r}{_hint(chain, chains, 'chains')}",
                    )
                )
        key = client.get("key")
        if isinstance(key, str) and key:
            here = format_path(("clients", i, "key"))
            if key in holders:
                problems.append(
                    (
                        ("clients", i, "key"),
                        f"the same key as {holders[key]}: each client needs a key of its own, "
                        "which no other client, apiKeys or adminKeys entry has",
                    )
                )
            else:
                holders[key] = here
    return problems


def literal_client_keys(data: Any, referenced: set[Loc]) -> list[tuple[Loc, str]]:
    """Client keys written in the file itself rather than as `${VAR}` (`referenced`: the
    places a reference was resolved).

    A config file is meant to live in git and be shown (the admin API, the web
    UI, `config show`); a client's key written in it would travel with every
    copy. Provider keys and `apiKeys` may still be literal for 429chain's
    sake; client keys are new, so they start right.
    """
    if not isinstance(data, dict):
        return []
    return [
        (
            ("clients", i, "key"),
            "write the key as a ${VAR} reference, its value in the environment or the .env "
            "beside the file (`chain429 client add` does that), not in the file",
        )
        for i, client in _items(data.get("clients"))
        if isinstance(client.get("key"), str) and ("clients", i, "key") not in referenced
    ]


def _setting(settings: dict[str, Any], name: str) -> Any:
    """A setting from loosely-typed data, under its camelCase or snake_case key."""
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
    return settings.get(name, settings.get(snake))


_FLAG: TypeAdapter[bool] = TypeAdapter(Flag)


def _flag(value: Any) -> bool | None:
    """A `paid` value read as the model reads it (`true`, `"yes"`, ...); None if it is not one."""
    try:
        return bool(_FLAG.validate_python(value))
    except ValidationError:
        return None


def _budget_named(data: dict[str, Any], settings: dict[str, Any]) -> str | None:
    """Where a paid budget is set (the first place found), or None when none is."""
    if _setting(settings, "paidBudgetUsdPerDay") is not None:
        return "settings.paidBudgetUsdPerDay"
    for i, client in _items(data.get("clients")):
        if client.get("paidBudgetUsdPerDay", client.get("paid_budget_usd_per_day")) is not None:
            return f"{format_path(('clients', i))}.paidBudgetUsdPerDay"
    return None


def _unpriced_paid_entries(data: dict[str, Any], settings: dict[str, Any]) -> list[tuple[Loc, str]]:
    """Paid entries without a price while a paid budget is set.

    A budget is a promise that paid entries never spend more than it; an entry
    whose cost cannot be computed could spend without bound. Refusing the file
    says so before any money is spent, rather than skipping the entry at run
    time where nobody notices why it is never used (docs/spend.md).
    """
    budget = _budget_named(data, settings)
    if budget is None:
        return []
    providers = {p.get("id"): p for _, p in _items(data.get("providers"))}
    problems: list[tuple[Loc, str]] = []
    for i, chain in _items(data.get("chains")):
        for j, entry in _items(chain.get("entries")):
            provider = providers.get(entry.get("provider"))
            if provider is None:
                continue  # reported above
            paid = _flag(entry["paid"]) if entry.get("paid") is not None else None
            if paid is None:
                paid = _flag(provider.get("paid", False))
            if not paid or entry.get("price") is not None or provider.get("price") is not None:
                continue
            problems.append(
                (
                    ("chains", i, "entries", j),
                    f"paid entry {entry.get('provider')}/{entry.get('model')} has no price, and "
                    f"{budget} caps paid spend: without a price its cost is unknown and no "
                    "budget could hold it; add `price: {inputPerMTok: ..., outputPerMTok: ...}` "
                    f"to this entry or to provider {entry.get('provider')!r}",
                )
            )
    return problems


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
    keyed = _setting(settings, "apiKeys") or _items(data.get("clients"))
    if isinstance(origins, list) and "*" in origins and not keyed:
        problems.append(
            (
                ("settings", "corsOrigins"),
                "'*' lets every web page call this server; it needs settings.apiKeys or clients",
            )
        )
    return problems
