"""What changed between two configs: a semantic diff and a unified YAML diff.

`diff_configs(old, new)` reports providers added, removed and changed (field by
field), chains added and removed, chain entries added, removed and moved (order
matters in a waterfall), aliases added, removed and pointed elsewhere,
clients added, removed and changed, and settings changed. `unified_diff(old, new)` is a
`diff -u` of each side's normalized YAML. Secrets (API keys, admin keys,
client keys, secret-looking headers, the database password) are masked in
every output.
The CLI's `diff` command and the admin API both use this module.
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from chain429.config.masking import field_masker, mask_secret, redact
from chain429.config.model import Chain, Config

__all__ = [
    "ChainChange",
    "ClientChange",
    "ConfigDiff",
    "EntryMove",
    "FieldChange",
    "ProviderChange",
    "diff_configs",
    "mask_secret",
    "unified_diff",
]

_CHANGED = "(changed)"


def _apply(mask: Callable[[Any], Any], value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list | tuple):
        return tuple(_apply(mask, v) for v in value)
    return value


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: Any
    new: Any
    secret: bool = False  # old and new are masked; equal masks mean "(changed)"

    def describe(self) -> str:
        if self.secret and self.old == self.new:
            return f"{self.path} {_CHANGED}"
        return f"{self.path} {_fmt(self.old)} -> {_fmt(self.new)}"

    def to_dict(self) -> dict[str, Any]:
        out = {"path": self.path, "old": _thaw(self.old), "new": _thaw(self.new)}
        if self.secret:
            out["secret"] = True
        return out


@dataclass(frozen=True)
class ProviderChange:
    id: str
    changes: tuple[FieldChange, ...]


@dataclass(frozen=True)
class ClientChange:
    name: str
    changes: tuple[FieldChange, ...]


@dataclass(frozen=True)
class EntryMove:
    provider: str
    model: str
    old_position: int  # 1-based, in the old chain
    new_position: int  # 1-based, in the new chain


@dataclass(frozen=True)
class ChainChange:
    name: str
    added: tuple[str, ...]  # "provider/model", in new chain order
    removed: tuple[str, ...]  # in old chain order
    moved: tuple[EntryMove, ...]  # by new position
    changed: tuple[FieldChange, ...]  # "provider/model.field"


@dataclass(frozen=True)
class ConfigDiff:
    providers_added: tuple[str, ...] = ()
    providers_removed: tuple[str, ...] = ()
    providers_changed: tuple[ProviderChange, ...] = ()
    chains_added: tuple[str, ...] = ()
    chains_removed: tuple[str, ...] = ()
    chains_changed: tuple[ChainChange, ...] = ()
    # One per alias: its old and new chain (None while it does not exist).
    aliases_changed: tuple[FieldChange, ...] = ()
    settings_changed: tuple[FieldChange, ...] = ()
    clients_added: tuple[str, ...] = ()
    clients_removed: tuple[str, ...] = ()
    clients_changed: tuple[ClientChange, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.providers_added
            or self.providers_removed
            or self.providers_changed
            or self.chains_added
            or self.chains_removed
            or self.chains_changed
            or self.aliases_changed
            or self.settings_changed
            or self.clients_added
            or self.clients_removed
            or self.clients_changed
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, camelCase, secrets masked."""
        return {
            "empty": self.empty,
            "providers": {
                "added": list(self.providers_added),
                "removed": list(self.providers_removed),
                "changed": [
                    {"id": p.id, "changes": [c.to_dict() for c in p.changes]}
                    for p in self.providers_changed
                ],
            },
            "chains": {
                "added": list(self.chains_added),
                "removed": list(self.chains_removed),
                "changed": [
                    {
                        "name": c.name,
                        "added": list(c.added),
                        "removed": list(c.removed),
                        "moved": [
                            {
                                "provider": m.provider,
                                "model": m.model,
                                "oldPosition": m.old_position,
                                "newPosition": m.new_position,
                            }
                            for m in c.moved
                        ],
                        "changed": [f.to_dict() for f in c.changed],
                    }
                    for c in self.chains_changed
                ],
            },
            "aliases": {"changed": [c.to_dict() for c in self.aliases_changed]},
            "settings": {"changed": [c.to_dict() for c in self.settings_changed]},
            "clients": {
                "added": list(self.clients_added),
                "removed": list(self.clients_removed),
                "changed": [
                    {"name": c.name, "changes": [f.to_dict() for f in c.changes]}
                    for c in self.clients_changed
                ],
            },
        }

    def summary_lines(self) -> list[str]:
        """One line per change: `+` added, `-` removed, `~` changed."""
        lines = [f"+ provider {p}" for p in self.providers_added]
        lines += [f"- provider {p}" for p in self.providers_removed]
        for pc in self.providers_changed:
            lines += [f"~ provider {pc.id}: {c.describe()}" for c in pc.changes]
        lines += [f"+ chain {c}" for c in self.chains_added]
        lines += [f"- chain {c}" for c in self.chains_removed]
        for cc in self.chains_changed:
            head = f"~ chain {cc.name}:"
            lines += [f"{head} + {label}" for label in cc.added]
            lines += [f"{head} - {label}" for label in cc.removed]
            lines += [
                f"{head} {m.provider}/{m.model} moved {m.old_position} -> {m.new_position}"
                for m in cc.moved
            ]
            lines += [f"{head} {c.describe()}" for c in cc.changed]
        for alias in self.aliases_changed:
            if alias.old is None:
                lines.append(f"+ alias {alias.path} -> {alias.new}")
            elif alias.new is None:
                lines.append(f"- alias {alias.path} (was -> {alias.old})")
            else:
                lines.append(f"~ alias {alias.path}: {alias.old} -> {alias.new}")
        lines += [f"~ settings: {c.describe()}" for c in self.settings_changed]
        lines += [f"+ client {c}" for c in self.clients_added]
        lines += [f"- client {c}" for c in self.clients_removed]
        for change in self.clients_changed:
            lines += [f"~ client {change.name}: {c.describe()}" for c in change.changes]
        return lines


def _fmt(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _thaw(value: Any) -> Any:
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted paths to leaf values; unset (None) leaves and empty mappings vanish,
    so `rateLimits: null` and a `rateLimits` with nothing set compare equal."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{path}."))
        elif value is not None:
            flat[path] = tuple(value) if isinstance(value, list) else value
    return flat


def _field_changes(
    old: dict[str, Any],
    new: dict[str, Any],
    section: str | None,
    resolved: Mapping[str, str],
    prefix: str = "",
) -> tuple[FieldChange, ...]:
    a, b = _flatten(old), _flatten(new)
    changes = []
    for path in sorted(a.keys() | b.keys()):
        before, after = a.get(path), b.get(path)
        if before == after:
            continue
        # A value from the environment is shown as its reference: a changed
        # variable reads "${X} -> ${X}", which describe() says as "(changed)".
        shown = redact(before, resolved), redact(after, resolved)
        hidden = shown != (before, after)
        before, after = shown
        mask = field_masker(section, path) if section else None
        if mask is not None:
            before, after = _apply(mask, before), _apply(mask, after)
        changes.append(
            FieldChange(f"{prefix}{path}", before, after, secret=hidden or mask is not None)
        )
    return tuple(changes)


def _redacted(value: Any, resolved: Mapping[str, str]) -> Any:
    """A diff (nested frozen dataclasses) with every string passed through `redact`."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: _redacted(getattr(value, f.name), resolved) for f in dataclasses.fields(value)
        }
        return dataclasses.replace(value, **changes)
    if isinstance(value, tuple):
        return tuple(_redacted(v, resolved) for v in value)
    return redact(value, resolved) if isinstance(value, str) else value


def _dump(model: Any, exclude: set[str] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude=exclude)
    return data


def _entry_keys(chain: Chain) -> list[tuple[str, str, int]]:
    """(provider, model, occurrence): a repeated entry keeps its own identity."""
    seen: dict[tuple[str, str], int] = {}
    keys = []
    for e in chain.entries:
        n = seen[(e.provider, e.model)] = seen.get((e.provider, e.model), 0) + 1
        keys.append((e.provider, e.model, n))
    return keys


def _label(key: tuple[str, str, int]) -> str:
    provider, model, n = key
    return f"{provider}/{model}" + (f"#{n}" if n > 1 else "")


def _longest_increasing(seq: list[int]) -> set[int]:
    """Indexes into `seq` of one longest strictly increasing subsequence."""
    tails: list[int] = []  # tails[k]: index of the smallest tail of a run of length k+1
    parent = [-1] * len(seq)
    for i, value in enumerate(seq):
        k = bisect.bisect_left([seq[t] for t in tails], value)
        parent[i] = tails[k - 1] if k else -1
        if k == len(tails):
            tails.append(i)
        else:
            tails[k] = i
    keep: set[int] = set()
    i = tails[-1] if tails else -1
    while i >= 0:
        keep.add(i)
        i = parent[i]
    return keep


def _diff_chain(old: Chain, new: Chain, resolved: Mapping[str, str]) -> ChainChange | None:
    old_keys, new_keys = _entry_keys(old), _entry_keys(new)
    old_pos = {k: i for i, k in enumerate(old_keys)}
    new_pos = {k: i for i, k in enumerate(new_keys)}
    added = tuple(_label(k) for k in new_keys if k not in old_pos)
    removed = tuple(_label(k) for k in old_keys if k not in new_pos)
    # Order among the entries on both sides: those outside one longest run that
    # kept its relative order are the ones that moved.
    common = [k for k in new_keys if k in old_pos]
    rank = {k: r for r, k in enumerate(sorted(common, key=old_pos.__getitem__))}
    keep = _longest_increasing([rank[k] for k in common])
    moved = tuple(
        EntryMove(k[0], k[1], old_pos[k] + 1, new_pos[k] + 1)
        for i, k in enumerate(common)
        if i not in keep
    )
    # The chain's own fields (its `kind`), then its entries'.
    changed = _field_changes(
        _dump(old, {"name", "entries"}), _dump(new, {"name", "entries"}), None, resolved
    )
    for k in common:
        before = _dump(old.entries[old_pos[k]], {"provider", "model"})
        after = _dump(new.entries[new_pos[k]], {"provider", "model"})
        changed += _field_changes(before, after, None, resolved, f"{_label(k)}.")
    if not (added or removed or moved or changed):
        return None
    return ChainChange(new.name, added, removed, moved, tuple(changed))


def diff_configs(old: Config, new: Config) -> ConfigDiff:
    """What changed from `old` to `new`, secrets masked; names sorted.

    Values that came from `${VAR}`s on either side are shown as their
    references, in names and labels as much as in field values.
    """
    resolved = {**new.resolved_values, **old.resolved_values}
    old_p = {p.id: p for p in old.providers}
    new_p = {p.id: p for p in new.providers}
    providers_changed = []
    for pid in sorted(old_p.keys() & new_p.keys()):
        before, after = _dump(old_p[pid], {"id"}), _dump(new_p[pid], {"id"})
        changes = _field_changes(before, after, "provider", resolved)
        if changes:
            providers_changed.append(ProviderChange(pid, changes))
    old_c = {c.name: c for c in old.chains}
    new_c = {c.name: c for c in new.chains}
    chains_changed = [
        change
        for name in sorted(old_c.keys() & new_c.keys())
        if (change := _diff_chain(old_c[name], new_c[name], resolved)) is not None
    ]
    old_k = {c.name: c for c in old.clients}
    new_k = {c.name: c for c in new.clients}
    clients_changed = []
    for name in sorted(old_k.keys() & new_k.keys()):
        before, after = _dump(old_k[name], {"name"}), _dump(new_k[name], {"name"})
        changes = _field_changes(before, after, "client", resolved)
        if changes:
            clients_changed.append(ClientChange(name, changes))
    redacted: ConfigDiff = _redacted(
        ConfigDiff(
            providers_added=tuple(sorted(new_p.keys() - old_p.keys())),
            providers_removed=tuple(sorted(old_p.keys() - new_p.keys())),
            providers_changed=tuple(providers_changed),
            chains_added=tuple(sorted(new_c.keys() - old_c.keys())),
            chains_removed=tuple(sorted(old_c.keys() - new_c.keys())),
            chains_changed=tuple(chains_changed),
            aliases_changed=tuple(
                FieldChange(alias, old.aliases.get(alias), new.aliases.get(alias))
                for alias in sorted(old.aliases.keys() | new.aliases.keys())
                if old.aliases.get(alias) != new.aliases.get(alias)
            ),
            # Effective values: writing a default out explicitly is not a change.
            settings_changed=_field_changes(
                _dump(old.settings), _dump(new.settings), "settings", resolved
            ),
            clients_added=tuple(sorted(new_k.keys() - old_k.keys())),
            clients_removed=tuple(sorted(old_k.keys() - new_k.keys())),
            clients_changed=tuple(clients_changed),
        ),
        resolved,
    )
    return redacted


# ---------------------------------------------------------------- unified diff

_Loc = tuple[Any, ...]


def _each_secret(data: dict[str, Any]) -> Iterable[tuple[_Loc, Any, Any, Callable[[Any], Any]]]:
    """(location, container, key, mask) of every secret string in a config dump."""
    settings = data.get("settings") or {}
    for name, value in settings.items():
        mask = field_masker("settings", name)
        if mask is not None and isinstance(value, list):
            for i in range(len(value)):
                yield ("settings", name, i), value, i, mask
        elif mask is not None and isinstance(value, str):
            yield ("settings", name), settings, name, mask
    for provider in data.get("providers") or []:
        pid = provider.get("id")
        for field in ("apiKey", "baseUrl"):
            mask = field_masker("provider", field)
            if mask is not None and isinstance(provider.get(field), str):
                yield ("provider", pid, field), provider, field, mask
        headers = provider.get("headers") or {}
        for name in headers:
            if (mask := field_masker("provider", f"headers.{name}")) is not None:
                yield ("provider", pid, "headers", name), headers, name, mask
    for client in data.get("clients") or []:
        mask = field_masker("client", "key")
        if mask is not None and isinstance(client.get("key"), str):
            yield ("client", client.get("name"), "key"), client, "key", mask


def _shown(config: Config) -> dict[str, Any]:
    dump = config.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    data: dict[str, Any] = redact(dump, config.resolved_values)
    return data


def _normalized(config: Config, other: Config | None) -> str:
    """Camel-case YAML without defaults, secrets masked, headers sorted. A secret
    that differs from `other`'s but masks the same is marked "(changed)"."""
    data = _shown(config)
    for provider in data.get("providers") or []:
        if "headers" in provider:
            provider["headers"] = dict(sorted(provider["headers"].items()))
    theirs: dict[_Loc, Any] = {}
    if other is not None:
        other_data = _shown(other)
        theirs = {loc: box[key] for loc, box, key, _ in _each_secret(other_data)}
    for loc, box, key, mask in list(_each_secret(data)):
        raw = box[key]
        masked = mask(raw)
        their = theirs.get(loc)
        if isinstance(their, str) and their != raw and mask(their) == masked:
            masked = f"{masked} {_CHANGED}"
        box[key] = masked
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def unified_diff(
    old: Config, new: Config, *, old_name: str = "running", new_name: str = "file"
) -> str:
    """A unified diff of both configs as normalized YAML; "" when they are equal."""
    if old == new:
        return ""
    a = _normalized(old, None).splitlines(keepends=True)
    b = _normalized(new, old).splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, fromfile=old_name, tofile=new_name))
