"""Edits to the config file (admin API and CLI) that keep it hand-editable.

People keep notes in the file, so edits go through ruamel.yaml's round-trip mode
(comments, order, blank lines, quotes and `${VAR}` strings survive), are validated
whole by the server's own loader, and only then replace the file atomically.

ruamel hangs the text that follows a node on its last scalar, so an appended
provider would land after the "Chains" banner and deleting the last item would
take that banner along; `_swap_rest` moves it to wherever the node now ends.
For the same reason a deleted item is cut out of the text itself (`_cut_item`):
in ruamel's tree the comment above it hangs on the item before it, and would
end up above the next one.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.error import YAMLError as RuamelYAMLError
from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, ScalarString
from ruamel.yaml.tokens import CommentToken

from chain429.config import Config, ConfigError, ConfigIssue, parse_config_text
from chain429.masking import (
    PROVIDER_SECRETS,
    SETTINGS_SECRETS,
    is_reference,
    mask_config,
    mask_headers,
    mask_secret,
    mask_url,
)

__all__ = ["ConfigDocument", "ConfigEditError", "apply_edit", "mask_secret", "write_atomically"]

T = TypeVar("T")


class ConfigEditError(Exception):
    """A change that cannot apply: .status 404 (unknown), 409 (conflict), 422 (invalid)."""

    def __init__(self, status: int, message: str, issues: Iterable[ConfigIssue] = (), names=()):
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
        masked = mask(_plain(old))
        return {k: old[k] if k in old and v == masked.get(k) else v for k, v in new.items()}
    if isinstance(new, list) and isinstance(old, list):  # apiKeys, item by item
        unused, out = list(old), []
        for item in new:  # each old key matches once: two keys can mask alike
            out.append(next((o for o in unused if item == mask(_plain(o))), item))
            unused = [o for o in unused if o is not out[-1]]
        return out
    return old if new == mask(_plain(old)) else new


# --- YAML nodes ----------------------------------------------------------------
# The server reads the file with PyYAML (YAML 1.1), to which `on`, `no` and
# `1:20` are not strings; ruamel (YAML 1.2) would write them unquoted.
_PYYAML = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"


def _plain(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {_plain(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    kind = next((t for t in (bool, int, float, str) if isinstance(node, t)), None)
    kind = bool if isinstance(node, ScalarBoolean) else kind  # an anchored bool is an int
    return node if kind is None else kind(node)  # ruamel's Scalar* types -> builtins


def _scalar(value: str, like: Any = None) -> Any:
    if isinstance(like, ScalarString):  # keep the quoting the user chose
        return type(like)(value)
    if _PYYAML.resolve(yaml.ScalarNode, value, (True, False)) != _STR_TAG:
        return DoubleQuotedScalarString(value)
    return value


def _node(value: Any) -> Any:
    """Plain data as nodes that dump in block style, like hand-written YAML."""
    if isinstance(value, Mapping):  # a null field is an absent one
        return CommentedMap((_scalar(str(k)), _node(v)) for k, v in value.items() if v is not None)
    if isinstance(value, list | tuple):
        return CommentedSeq(_node(v) for v in value)
    return _scalar(value) if isinstance(value, str) else value


def _identity(item: Any, loose: bool = False) -> Any:
    if not isinstance(item, Mapping):
        return _plain(item)
    keys = [k for k in ("id", "name", "provider", "model") if k in item]
    return tuple((k, _plain(item[k])) for k in (keys[:1] if loose else keys))


def _split_tail(value: str, column: int | None) -> tuple[str, str]:
    """(the line's comment and comment lines indented under it, the rest: blank lines and
    less indented comments, which separate the node from what follows it)."""
    first, newline, after = value.partition("\n")
    lines = after.splitlines(keepends=True)
    own = 0
    while column is not None and own < len(lines) and re.match(f" {{{column},}}#", lines[own]):
        own += 1
    return first + newline + "".join(lines[:own]), "".join(lines[own:])


def _tail(node: Any) -> tuple[list[Any], int, int | None] | None:
    """The comment slot after `node`'s last line: (ca.items entry, index in it, key column)."""
    while isinstance(node, CommentedMap | CommentedSeq) and node:
        container: Any = node  # mypy narrows to a union that lacks non_merged_items
        is_map = isinstance(node, CommentedMap)
        key = list(dict(container.non_merged_items()))[-1] if is_map else len(node) - 1
        value = node[key]
        if isinstance(value, CommentedMap | CommentedSeq) and value and not value.fa.flow_style():
            node = value  # the text after a block collection hangs on its last scalar
            continue
        try:  # a node made in this process has no position; its comments are all "rest"
            column = node.lc.key(key)[1] if is_map else node.lc.item(key)[1] - 1
        except (KeyError, TypeError, IndexError):
            column = None
        return node.ca.items.setdefault(key, [None] * 4), 2 if is_map else 0, column
    return None


def _swap_rest(node: Any, rest: str | None = "") -> str:
    """Put `rest` after `node`'s own lines (None: leave it); return what was there."""
    slot = _tail(node)
    if slot is None:
        return ""
    entry, pos, column = slot
    own, old = _split_tail(entry[pos].value, column) if entry[pos] else ("\n", "")
    if rest is not None and entry[pos] is not None:
        entry[pos].value = own + rest
    elif rest:
        entry[pos] = CommentToken(own + rest, CommentMark(0))
    if entry[pos] is not None and entry[pos].value == "\n":
        entry[pos] = None
    return old


def _merge(old: Any, new: Any) -> Any:
    """`new` written over `old` in place, keeping the comments of what persists."""
    if old is new:
        return old
    if isinstance(old, CommentedMap) and isinstance(new, Mapping):
        rest = _swap_rest(old)
        for key in [k for k in old if new.get(k) is None]:
            del old[key]
            old.ca.items.pop(key, None)  # or a re-added key would get its comment back
        for key, value in new.items():
            if value is not None:
                old[key] = _merge(old[key], value) if key in old else _node(value)
        _swap_rest(old, rest)
        return old
    if isinstance(old, CommentedSeq) and isinstance(new, list | tuple):
        rest = _swap_rest(old)
        comments, pool, merged = dict(old.ca.items), list(enumerate(old)), []
        for i, value in enumerate(new):
            # Match items by what they are, so "# paid fallback" follows its entry;
            # an edited entry keeps the comments of the one it replaces.
            found = next((p for p in pool if _identity(p[1]) == _identity(value)), None)
            if found is None and isinstance(value, Mapping):
                same = _identity(value, loose=True)
                found = next((p for p in pool if same and _identity(p[1], True) == same), None)
                found = found or next((p for p in pool if p[0] == i), None)
            if found is not None:
                pool.remove(found)
            merged.append(
                (None, _node(value)) if found is None else (found[0], _merge(found[1], value))
            )
        list.clear(old)
        old.ca.items.clear()
        for i, (origin, item) in enumerate(merged):
            old.append(item)
            if origin in comments:
                old.ca.items[i] = comments[origin]
        _swap_rest(old, rest)
        return old
    if type(_plain(old)) is type(new) and _plain(old) == new:
        return old  # unchanged: keep its quoting and formatting
    return _scalar(new, like=old) if isinstance(new, str) else _node(new)


def _append(seq: Any, item: Any) -> None:
    # Items separated by blank lines stay so, and what followed the list still does.
    sample = _swap_rest(seq[-2], None) if len(seq) >= 2 else None
    rest = _swap_rest(seq)
    gap = re.match(r"(?:[ \t]*\n)*", rest if sample is None else sample)
    seq.append(item)
    if len(seq) >= 2 and gap:
        _swap_rest(seq[-2], "\n" * gap[0].count("\n"))
    _swap_rest(seq, rest)


def _cut_item(text: str, data: Any, section: str, index: int) -> str | None:
    """`text` without item `index` of the block list `section` and the comment lines
    right above it (the comment that describes it); None if the lines are not as expected.

    Comment lines and blank lines no deeper than the item's dash, between two
    items, belong to the next one; deeper ones belong to the item they follow.
    """
    lines, seq = text.splitlines(keepends=True), data[section]

    def dash_line(i: int) -> int | None:
        line, column = seq.lc.item(i)
        if lines[line][:column].rstrip().endswith("-"):
            return line
        return line - 1 if line > 0 and lines[line - 1].strip() == "-" else None

    def loose(line: str) -> bool:  # blank, or a comment at most as deep as the dash
        return not line.strip() or (
            line.lstrip().startswith("#") and len(line) - len(line.lstrip()) <= dash
        )

    start = dash_line(index)
    if start is None:
        return None
    dash = len(lines[start]) - len(lines[start].lstrip())
    last = index == len(seq) - 1
    if not last:
        after = dash_line(index + 1)
    else:
        keys = list(data)
        following = keys[keys.index(section) + 1 :]
        after = data.lc.key(following[0])[0] if following else len(lines)
    if after is None or not 0 < data.lc.key(section)[0] + 1 <= start < after <= len(lines):
        return None
    end = after  # the item's own lines end where the loose lines before `after` begin
    while end > start + 1 and loose(lines[end - 1]):
        end -= 1
    above = start  # the comment lines right above the item go with it
    while above > 0 and lines[above - 1].strip() and loose(lines[above - 1]):
        above -= 1
    if last:  # what follows the list stays, so the gap before the item goes
        while above > data.lc.key(section)[0] + 1 and not lines[above - 1].strip():
            above -= 1
    else:  # the next item keeps the gap before this one; this one's gap goes
        while end < after and not lines[end].strip():
            end += 1
    return "".join(lines[:above] + lines[end:])


def _remove(parent: Any, section: str, index: int) -> None:
    """Delete an item in ruamel's tree (where `_cut_item` cannot): its comments may move."""
    seq = parent[section]
    if index < len(seq) - 1:
        del seq[index]  # its trailing gap goes with it; the one before it stays
        return
    rest = _swap_rest(seq)  # what followed the list must still follow it
    del seq[index]
    if seq:
        _swap_rest(seq, rest)
    else:  # null reads as empty; ruamel would put comments that follow a `[]` before it
        parent[section] = None
        entry = parent.ca.items.setdefault(section, [None] * 4)
        own = entry[2].value.partition("\n")[0] if entry[2] else ""  # "chains:  # ..."
        if own or rest:
            entry[2] = entry[2] or CommentToken("", CommentMark(0))
            entry[2].value = f"{own}\n{rest}"


# A "key:" line with nothing after it, then (past blank and comment lines) the
# first line of its value: how this file indents mappings and lists.
_OPENER = r"^( *)(- +)?[^\s#-][^#\n]*:[ \t]*(?:#.*)?\n(?:[ \t]*(?:#.*)?\n)*( *)"


def _guess_indent(text: str) -> tuple[int, int]:
    """(mapping indent, list dash offset) as the file does it; 429chain's by default."""
    found = [re.search(_OPENER + tail, text, re.M) for tail in (r"[^\s#-]", "- ")]
    mapping, offset = (len(m[3]) - len(m[1]) - len(m[2] or "") if m else 2 for m in found)
    return max(mapping, 1), max(offset, 0)


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
        mapping, offset = _guess_indent(text)  # or every line could be re-indented
        yaml_.indent(mapping=mapping, sequence=offset + 2, offset=offset)
        filename = None if path is None else str(path)
        try:
            data = yaml_.load(text[len(preamble) :])
        except RuamelYAMLError as exc:  # its message carries the line and column
            issue = ConfigIssue(filename, None, "", f"invalid YAML: {exc}")
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

    def _remove(self, section: str, index: int) -> None:
        """Delete item `index` of a section, with the comment lines above it."""
        expected = _plain(self._data)
        del expected[section][index]
        expected[section] = expected[section] or None
        if not self._data[section].fa.flow_style():
            out = io.StringIO()
            self._yaml.dump(self._data, out)
            try:
                cut = _cut_item(out.getvalue(), self._yaml.load(out.getvalue()), section, index)
                data = None if cut is None else self._yaml.load(cut)
            except (RuamelYAMLError, KeyError, IndexError, TypeError, ValueError):
                data = None  # an anchor in the item, say: let ruamel delete it
            if isinstance(data, CommentedMap) and _plain(data) == expected:
                self._data = data
                return
        _remove(self._data, section, index)

    def raw(self) -> dict[str, Any]:
        return _plain(self._data)

    def masked(self) -> dict[str, Any]:
        return mask_config(self.raw())

    def _section(self, key: str, create: bool = False) -> Any:
        kind = CommentedMap if key == "settings" else CommentedSeq
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
        ids = [_plain(item.get(field)) if isinstance(item, Mapping) else None for item in seq]
        return seq, ids.index(value) if value in ids else None

    def upsert_provider(self, provider: dict[str, Any]) -> str:
        new = dict(provider)
        seq, index = self._find("providers", "id", new.get("id"), "provider")
        if index is None:
            _append(self._section("providers", create=True), _node(new))
            return "created"
        old = seq[index]
        self._check_redirect(index, old, new)
        if new.get("apiKey") is None:
            new["apiKey"] = old.get("apiKey")  # omitted means "keep": a form need not echo it
        for field, mask in PROVIDER_SECRETS.items():
            new[field] = _keep_masked(new.get(field), old.get(field), mask)
        _merge(old, new)
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
            if _plain(old.get(field)) != new.get(field)
            and new.get(field) != mask_url(_plain(old.get(field)))
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
        old_headers = _plain(old.get("headers")) or {}
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

    def delete_provider(self, provider_id: str) -> None:
        _, index = self._find("providers", "id", provider_id, "provider")
        if index is None:
            raise ConfigEditError(404, f"no provider with id {provider_id!r}")
        users = []
        for chain in self._section("chains"):
            entries = chain.get("entries") if isinstance(chain, Mapping) else None
            refs = [e.get("provider") for e in entries or () if isinstance(e, Mapping)]
            if provider_id in refs:
                users.append(str(chain.get("name")))
        if users:
            message = f"provider {provider_id!r} is used by chains: {', '.join(users)}"
            raise ConfigEditError(409, message, names=users)
        self._remove("providers", index)

    def upsert_chain(self, chain: dict[str, Any]) -> str:
        seq, index = self._find("chains", "name", chain.get("name"), "chain")
        if index is None:
            _append(self._section("chains", create=True), _node(chain))
            return "created"
        _merge(seq[index], chain)
        return "updated"

    def delete_chain(self, name: str) -> None:
        _, index = self._find("chains", "name", name, "chain")
        if index is None:
            raise ConfigEditError(404, f"no chain named {name!r}")
        if _plain(self._section("settings").get("defaultChain")) == name:
            message = f"chain {name!r} is settings.defaultChain; choose another default first"
            raise ConfigEditError(409, message, names=["settings.defaultChain"])
        self._remove("chains", index)

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
        _merge(settings, {**{k: settings[k] for k in settings}, **changes})

    def validate(
        self, *, environ: Mapping[str, str] | None = None, dotenv_dir: Path | None = None
    ) -> Config:
        try:
            return parse_config_text(
                self.text(), filename=self._filename, environ=environ, dotenv_dir=dotenv_dir
            )
        except ConfigError as exc:
            raise ConfigEditError(422, "the edited config is not valid", exc.issues) from None


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text`: a reader sees the old file or the new one, never half."""
    target = Path(os.path.realpath(path))  # write through a symlink, not over it
    current = target.stat() if target.exists() else None  # a new file: 0600, it may hold keys
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            if current is not None:
                os.fchmod(handle.fileno(), current.st_mode & 0o7777)
                with contextlib.suppress(OSError):  # only root may give a file away
                    os.fchown(handle.fileno(), current.st_uid, current.st_gid)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename is durable once the directory is
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An advisory lock on the config file's directory (a no-op where flock is missing).

    Not on the file: the write replaces it, so a newcomer would lock the new
    inode while an older waiter holds the old one. The directory stays put.
    """
    try:
        import fcntl
    except ImportError:  # Windows: the thread lock is all there is
        yield
        return
    descriptor = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


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
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(os.path.realpath(path), threading.Lock())
    # One writer per file, or two edits loaded from the same text would each
    # write back without the other's change: a thread lock within this process,
    # and a file lock across processes (a CLI edit while the
    # server edits).
    with lock, _file_lock(path):
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
