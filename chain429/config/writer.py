"""Edits to the config file (admin API and CLI) that keep it hand-editable.

People keep notes in the file, so edits go through ruamel.yaml's round-trip mode
(comments, order, blank lines, quotes and `${VAR}` strings survive), are validated
whole by the server's own loader, and only then replace the file atomically.

ruamel hangs the text that follows a node on its last scalar, so an appended
provider would land after the "Chains" banner and deleting the last item would
take that banner along; `swap_rest` moves it to wherever the node now ends.
For the same reason items are deleted and reordered in the text itself
(chain429.config.yaml_lines): in ruamel's tree the comment above an item hangs on the
item before it, and would end up above the next one.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError as RuamelYAMLError

from chain429.config import yaml_lines
from chain429.config.clients import no_such_client
from chain429.config.errors import ConfigError, ConfigIssue
from chain429.config.files import one_writer, write_atomically
from chain429.config.loader import parse_config_text
from chain429.config.masking import (
    CLIENT_SECRETS,
    PROVIDER_SECRETS,
    SETTINGS_SECRETS,
    is_reference,
    mask_config,
    mask_headers,
    mask_secret,
    mask_url,
)
from chain429.config.model import Config
from chain429.config.yaml_nodes import (
    append_item,
    as_node,
    guess_indent,
    merge,
    plain,
    provider_of,
    remove_item,
    scalar,
    swap_rest,
)

__all__ = ["ConfigDocument", "ConfigEditError", "apply_edit", "mask_secret", "write_atomically"]

T = TypeVar("T")


class ConfigEditError(Exception):
    """A change that cannot apply: .status 404 (unknown), 409 (conflict), 422 (invalid)."""

    def __init__(
        self,
        status: int,
        message: str,
        issues: Iterable[ConfigIssue] = (),
        names: Iterable[str] = (),
    ) -> None:
        self.status, self.message = status, message
        self.issues: list[ConfigIssue] = list(issues)
        self.names: tuple[str, ...] = tuple(names)  # what a 409 conflicts with
        detail = "\n".join(str(issue) for issue in self.issues)
        super().__init__(f"{message}\n{detail}" if detail else message)


def _keep_masked(new: Any, old: Any, mask: Callable[[Any], Any]) -> Any:
    """`new`, except where it is the masked form of what `old` holds."""
    if old is None or new is None:
        return new
    if isinstance(new, Mapping) and isinstance(old, Mapping):  # headers, by name
        masked = mask(plain(old))
        return {k: old[k] if k in old and v == masked.get(k) else v for k, v in new.items()}
    if isinstance(new, list) and isinstance(old, list):  # apiKeys, item by item
        unused, out = list(old), []
        for item in new:  # each old key matches once: two keys can mask alike
            out.append(next((o for o in unused if item == mask(plain(o))), item))
            unused = [o for o in unused if o is not out[-1]]
        return out
    return old if new == mask(plain(old)) else new


# ruamel drops comments before a `---` line; that prefix is kept verbatim.
_PREAMBLE = re.compile(r"\A(?:[ \t]*(?:#[^\n]*)?\n)*---[ \t]*(?:#[^\n]*)?\n")


class ConfigDocument:
    """One config file loaded for round-trip editing; edits change it in memory only."""

    def __init__(self, data: Any, yaml_: YAML, path: Path | None, preamble: str, crlf: bool):
        self._data, self._yaml, self.path = data, yaml_, path
        self._preamble, self._crlf = preamble, crlf
        self._filename = str(path) if path is not None else None

    @classmethod
    def load(cls, path: Path) -> ConfigDocument:
        return cls.from_text(Path(path).read_bytes().decode("utf-8"), Path(path))

    @classmethod
    def from_text(cls, text: str, path: Path | None = None) -> ConfigDocument:
        crlf, text = "\r\n" in text, text.replace("\r\n", "\n")
        preamble = match[0] if (match := _PREAMBLE.match(text)) else ""
        yaml_ = YAML(typ="rt")
        yaml_.preserve_quotes, yaml_.width = True, 4096  # never re-wrap a long line
        mapping, offset = guess_indent(text)  # or every line could be re-indented
        yaml_.indent(mapping=mapping, sequence=offset + 2, offset=offset)
        filename = None if path is None else str(path)
        try:
            data = yaml_.load(text[len(preamble) :])
        except RuamelYAMLError as exc:  # its message carries the line and column
            issue = ConfigIssue(filename, None, "", f"invalid YAML: {exc}")
            raise ConfigEditError(422, "the config file is not valid YAML", [issue]) from None
        except TypeError:  # ruamel cannot hold a mapping or a list as a key (`? {a: 1}`)
            issue = ConfigIssue(filename, None, "", "invalid YAML: a key that is not text")
            raise ConfigEditError(422, "the config file is not valid YAML", [issue]) from None
        data = CommentedMap() if data is None else data
        if not isinstance(data, CommentedMap):
            issue = ConfigIssue(filename, 1, "", "the top level must be a mapping")
            raise ConfigEditError(422, "the config file is not a mapping", [issue])
        return cls(data, yaml_, path, preamble, crlf)

    def text(self) -> str:
        out = io.StringIO()
        self._yaml.dump(self._data, out)
        text = self._preamble + out.getvalue()
        return text.replace("\n", "\r\n") if self._crlf else text

    def _rewrite(self, expected: Any, change: Callable[[str, Any], str | None]) -> bool:
        """Replace the document by `change(text, loaded text)` if that reads as `expected`."""
        out = io.StringIO()
        self._yaml.dump(self._data, out)
        try:
            text = change(out.getvalue(), self._yaml.load(out.getvalue()))
            data = None if text is None else self._yaml.load(text)
        except (RuamelYAMLError, KeyError, IndexError, TypeError, ValueError):
            data = None  # an alias into the item, say: the caller edits the tree instead
        if isinstance(data, CommentedMap) and plain(data) == expected:
            self._data = data
            return True
        return False

    def _remove(self, path: yaml_lines.Path, index: int) -> None:
        """Delete item `index` of the list at `path`, with the comment lines above it."""
        expected = plain(self._data)
        parent = yaml_lines.node_at(expected, path[:-1])
        del parent[path[-1]][index]
        parent[path[-1]] = parent[path[-1]] or None  # as an emptied section reads
        if not self._rewrite(expected, lambda text, data: yaml_lines.cut(text, data, path, index)):
            remove_item(yaml_lines.node_at(self._data, path[:-1]), str(path[-1]), index)

    def raw(self) -> dict[str, Any]:
        data: dict[str, Any] = plain(self._data)
        return data

    def masked(self) -> dict[str, Any]:
        return mask_config(self.raw())

    def _section(self, key: str, create: bool = False) -> Any:
        kind = CommentedMap if key in ("settings", "aliases") else CommentedSeq
        value = self._data.get(key)
        if isinstance(value, kind):
            return value
        if value is not None:
            shape = "list" if kind is CommentedSeq else "mapping"
            issue = ConfigIssue(self._filename, None, key, f"must be a {shape}")
            raise ConfigEditError(422, f"{key} has the wrong type", [issue])
        if create:  # a null section keeps its place and comments; a missing one goes last
            self._data[key] = kind()
        return self._data[key] if create else kind()

    def _find(self, section: str, field: str, value: Any, what: str) -> tuple[Any, int | None]:
        if not isinstance(value, str) or not value:
            issue = ConfigIssue(self._filename, None, field, f"a {what} needs a {field}")
            raise ConfigEditError(422, f"the {what} has no {field}", [issue])
        seq = self._section(section)
        ids = [plain(item.get(field)) if isinstance(item, Mapping) else None for item in seq]
        return seq, ids.index(value) if value in ids else None

    def upsert_provider(self, provider: dict[str, Any]) -> str:
        new = dict(provider)
        seq, index = self._find("providers", "id", new.get("id"), "provider")
        if index is None:
            append_item(self._section("providers", create=True), as_node(new))
            return "created"
        old = seq[index]
        self._check_redirect(index, old, new)
        if new.get("apiKey") is None:
            new["apiKey"] = old.get("apiKey")  # omitted means "keep": a form need not echo it
        for field, mask in PROVIDER_SECRETS.items():
            new[field] = _keep_masked(new.get(field), old.get(field), mask)
        merge(old, new)
        return "updated"

    def _check_redirect(self, index: int, old: Any, new: dict[str, Any]) -> None:
        """A provider sent elsewhere (new baseUrl or type) takes its secrets only if named again.

        Otherwise whoever may edit the config could point a provider at their
        own server and receive its key: the stored key, and secret headers
        sent back masked, are kept only while the destination stays the same.
        """
        moved = [
            field
            for field in ("type", "baseUrl")
            if plain(old.get(field)) != new.get(field)
            and new.get(field) != mask_url(plain(old.get(field)))
        ]
        if not moved:
            return
        why = f"{' and '.join(moved)} changed"
        issues = []
        if old.get("apiKey") is not None and not (
            isinstance(new.get("apiKey"), str) and is_reference(new["apiKey"])
        ):
            issues.append(
                ConfigIssue(
                    self._filename,
                    None,
                    f"providers[{index}].apiKey",
                    f"{why}: give the key again in the same edit, as a ${{VAR}} reference",
                )
            )
        old_headers = plain(old.get("headers")) or {}
        new_headers = new.get("headers") or {}
        for name, value in new_headers.items() if isinstance(new_headers, Mapping) else ():
            masked = mask_headers(old_headers).get(name)
            if name in old_headers and value == masked and masked != old_headers[name]:
                issues.append(
                    ConfigIssue(
                        self._filename,
                        None,
                        f"providers[{index}].headers.{name}",
                        f"{why}: give this secret header again, not its masked form",
                    )
                )
        if issues:
            detail = "; ".join(f"{issue.path}: {issue.message}" for issue in issues)
            raise ConfigEditError(422, f"provider {new.get('id')!r}: {detail}", issues)

    def delete_provider(self, provider_id: str, *, cascade: bool = False) -> list[str]:
        """Remove a provider; 409 while a chain uses it, unless `cascade`: then its chain
        entries go too, and the chains that leaves empty (their names are returned).
        The default chain may not be left empty (409)."""
        _, index = self._find("providers", "id", provider_id, "provider")
        if index is None:
            raise ConfigEditError(404, f"no provider with id {provider_id!r}")
        uses: dict[str, list[int]] = {}  # chain -> the entries on this provider
        emptied: list[str] = []
        for chain in self._section("chains"):
            entries = (chain.get("entries") if isinstance(chain, Mapping) else None) or ()
            mine = [i for i, e in enumerate(entries) if provider_of(e) == provider_id]
            if mine:
                uses[str(chain.get("name"))] = mine
                emptied += [str(chain.get("name"))] if len(mine) == len(entries) else []
        if uses and not cascade:
            message = f"provider {provider_id!r} is used by chains: {', '.join(uses)}"
            raise ConfigEditError(409, message, names=list(uses))
        for name in emptied:
            self._unaliased(name, f"would be left empty (all its entries are on {provider_id!r})")
        default = plain(self._section("settings").get("defaultChain"))
        if default in emptied:
            message = (
                f"the default chain {default!r} would be left empty (all its entries are on "
                f"{provider_id!r}); choose another default first"
            )
            raise ConfigEditError(409, message, names=["settings.defaultChain"])
        for name, mine in uses.items():  # each removal may replace the tree: look again
            at = self._entries(name)[0]
            for path, i in (
                [(("chains",), at)]
                if name in emptied
                else [(("chains", at, "entries"), i) for i in reversed(mine)]
            ):
                self._remove(path, i)
        self._remove(("providers",), self._find("providers", "id", provider_id, "provider")[1] or 0)
        return emptied

    def upsert_chain(self, chain: dict[str, Any]) -> str:
        seq, index = self._find("chains", "name", chain.get("name"), "chain")
        if index is None:
            append_item(self._section("chains", create=True), as_node(chain))
            return "created"
        merge(seq[index], chain)
        return "updated"

    def delete_chain(self, name: str) -> None:
        _, index = self._find("chains", "name", name, "chain")
        if index is None:
            raise ConfigEditError(404, f"no chain named {name!r}")
        if plain(self._section("settings").get("defaultChain")) == name:
            message = f"chain {name!r} is settings.defaultChain; choose another default first"
            raise ConfigEditError(409, message, names=["settings.defaultChain"])
        self._unaliased(name, "would be removed")
        self._remove(("chains",), index)

    def _unaliased(self, chain: str, what: str) -> None:
        """409 when aliases name `chain`: removing it would leave them pointing nowhere."""
        aliases = [str(a) for a, c in self._section("aliases").items() if plain(c) == chain]
        if aliases:
            message = (
                f"chain {chain!r} {what}, and aliases name it: {', '.join(aliases)}; point "
                "them at another chain or remove them first"
            )
            raise ConfigEditError(409, message, names=[f"aliases.{a}" for a in aliases])

    def set_alias(self, alias: str, chain: str) -> str:
        """Point `alias` at `chain` (`aliases:` made last if missing): created, updated or
        unchanged. Whether the chain exists is the whole config's validation's to say."""
        for value, field in ((alias, "alias"), (chain, "chain")):
            if not isinstance(value, str) or not value:
                issue = ConfigIssue(self._filename, None, field, "must be a non-empty string")
                raise ConfigEditError(422, f"the {field} must be a non-empty string", [issue])
        aliases = self._section("aliases", create=True)
        old = plain(aliases.get(alias))
        if old == chain:
            return "unchanged"
        if old is not None:
            aliases[alias] = scalar(chain, like=aliases[alias])
            return "updated"
        rest = swap_rest(aliases)  # what followed the section must still follow it
        aliases[alias] = scalar(chain)
        swap_rest(aliases, rest)
        return "created"

    def delete_alias(self, alias: str) -> None:
        aliases = self._section("aliases")
        if alias not in aliases:
            raise ConfigEditError(404, f"no alias {alias!r}")
        expected = plain(self._data)
        del expected["aliases"][alias]
        expected["aliases"] = expected["aliases"] or None  # as an emptied section reads
        if not self._rewrite(
            expected, lambda text, data: yaml_lines.cut_key(text, data, ("aliases",), alias)
        ):
            del aliases[alias]  # a flow mapping, say: the comments may move
            if not aliases:
                self._data["aliases"] = None

    def _entries(self, chain: str) -> tuple[int, Any]:
        seq, index = self._find("chains", "name", chain, "chain")
        if index is None:
            raise ConfigEditError(404, f"no chain named {chain!r}")
        entries = seq[index].get("entries") if isinstance(seq[index], Mapping) else None
        if not isinstance(entries, CommentedSeq):
            raise ConfigEditError(422, f"chain {chain!r} has no list of entries")
        return index, entries

    def add_entry(self, chain: str, entry: dict[str, Any], position: int | None = None) -> None:
        """Add an entry to a chain at `position` (from 0; default: last)."""
        index, entries = self._entries(chain)
        old = plain(self._data["chains"][index])
        merge(self._data["chains"][index], {**old, "entries": [*old["entries"], entry]})
        if position is not None and position < len(entries) - 1:
            self.move_entry(chain, len(entries) - 1, position)

    def move_entry(self, chain: str, index: int, to: int) -> None:
        """Move entry `index` of a chain to `to` (both from 0), the comment above it along."""
        at, entries = self._entries(chain)
        order = list(range(len(entries)))
        order.insert(to, order.pop(index))
        path = ("chains", at, "entries")
        expected = plain(self._data)
        moved = [yaml_lines.node_at(expected, path)[i] for i in order]
        yaml_lines.node_at(expected, path[:-1])["entries"] = moved
        if not self._rewrite(
            expected, lambda text, data: yaml_lines.reorder(text, data, path, order)
        ):
            merge(self._data["chains"][at], yaml_lines.node_at(expected, path[:-1]))

    def delete_entry(self, chain: str, index: int) -> None:
        """Remove entry `index` (from 0) of a chain, and the comment above it."""
        at, entries = self._entries(chain)
        if not 0 <= index < len(entries):
            raise ConfigEditError(404, f"chain {chain!r} has no entry {index + 1}")
        if len(entries) == 1:
            message = f"that is the only entry of chain {chain!r}, and a chain needs one"
            raise ConfigEditError(409, message, names=[chain])
        self._remove(("chains", at, "entries"), index)

    def upsert_client(self, client: dict[str, Any]) -> str:
        """Add a client, or replace one (fields left out go); its key, left out or sent
        back masked, is kept."""
        new = dict(client)
        seq, index = self._find("clients", "name", new.get("name"), "client")
        if index is None:
            append_item(self._section("clients", create=True), as_node(new))
            return "created"
        old = seq[index]
        if new.get("key") is None:
            new["key"] = old.get("key")  # omitted means "keep", as a provider's apiKey
        for field, mask in CLIENT_SECRETS.items():
            new[field] = _keep_masked(new.get(field), old.get(field), mask)
        merge(old, new)
        return "updated"

    def delete_client(self, name: str) -> None:
        seq, index = self._find("clients", "name", name, "client")
        if index is None:
            names = [str(plain(item.get("name"))) for item in seq if isinstance(item, Mapping)]
            raise ConfigEditError(404, no_such_client(name, names))
        self._remove(("clients",), index)

    def patch_settings(self, changes: dict[str, Any]) -> None:
        if not isinstance(changes, Mapping):
            issue = ConfigIssue(self._filename, None, "settings", "must be a mapping")
            raise ConfigEditError(422, "settings changes must be a mapping", [issue])
        changes = dict(changes)
        settings = self._section("settings", create=True)
        for field, mask in SETTINGS_SECRETS.items():
            if field in changes:
                changes[field] = _keep_masked(changes[field], settings.get(field), mask)
        # Keys not named are passed through as they are; null removes a key.
        merge(settings, {**{k: settings[k] for k in settings}, **changes})

    def validate(
        self, *, environ: Mapping[str, str] | None = None, dotenv_dir: Path | None = None
    ) -> Config:
        try:
            return parse_config_text(
                self.text(), filename=self._filename, environ=environ, dotenv_dir=dotenv_dir
            )
        except ConfigError as exc:
            raise ConfigEditError(422, "the edited config is not valid", exc.issues) from None


def apply_edit(
    path: Path,
    edit: Callable[[ConfigDocument], T],
    *,
    environ: Mapping[str, str] | None = None,
    base_must_be_valid: bool = False,
    check: Callable[[Config], None] | None = None,
) -> tuple[Config, T]:
    """Load, edit, validate the whole result, write it; on any error nothing changes.

    `base_must_be_valid`: refuse (409) to edit a file that is empty or invalid
    now, instead of writing a config made of the edit alone (the admin API:
    its caller cannot see what the file lost). `check` may refuse the
    validated result by raising, just before it is written.
    """
    path = Path(path)
    # One writer per file, or two edits loaded from the same text would each
    # write back without the other's change (a CLI edit while the server edits).
    with one_writer(path):
        original = path.read_bytes().decode("utf-8")
        if base_must_be_valid:
            try:
                parse_config_text(
                    original, filename=str(path), environ=environ, dotenv_dir=path.parent
                )
            except ConfigError as exc:
                message = "the config file is not valid now; fix it before editing it here"
                raise ConfigEditError(409, message, exc.issues) from None
        document = ConfigDocument.from_text(original, path)
        result = edit(document)
        config = document.validate(environ=environ, dotenv_dir=path.parent)
        if check is not None:
            check(config)
        text = document.text()
        if text != original:
            write_atomically(path, text)
        return config, result
