"""ruamel.yaml's round-trip nodes, edited the way a person edits the file.

chain429.config.writer changes the config through ruamel's tree so comments,
order, quoting and `${VAR}` strings survive. These are its node-level tools:
plain data out of nodes (`plain`) and nodes out of plain data (`as_node`,
`scalar`: quoted where PyYAML, which the server reads with, would not take the
text for a string), an edit written over what was there keeping the comments
of what persists (`merge`), and list items added and removed (`append_item`,
`remove_item`). ruamel hangs the text that follows a node on its last scalar,
so an appended provider would land after the "Chains" banner and deleting the
last item would take that banner along; `swap_rest` moves that text to wherever
the node now ends.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, ScalarString
from ruamel.yaml.tokens import CommentToken

__all__ = [
    "append_item",
    "as_node",
    "guess_indent",
    "identity",
    "merge",
    "plain",
    "provider_of",
    "remove_item",
    "scalar",
    "swap_rest",
]

# The server reads the file with PyYAML (YAML 1.1), to which `on`, `no` and
# `1:20` are not strings; ruamel (YAML 1.2) would write them unquoted.
_PYYAML = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"


def _key(node: Any) -> Any:
    # YAML allows a mapping or a list as a key (`? {a: 1}`); no config key is
    # one, so it stays as its text and validation reports it as unknown.
    key = plain(node)
    return repr(key) if isinstance(key, dict | list) else key


def plain(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {_key(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    kind = next((t for t in (bool, int, float, str) if isinstance(node, t)), None)
    kind = bool if isinstance(node, ScalarBoolean) else kind  # an anchored bool is an int
    return node if kind is None else kind(node)  # ruamel's Scalar* types -> builtins


def scalar(value: str, like: Any = None) -> Any:
    if isinstance(like, ScalarString):  # keep the quoting the user chose
        return type(like)(value)
    if _PYYAML.resolve(yaml.ScalarNode, value, (True, False)) != _STR_TAG:
        return DoubleQuotedScalarString(value)
    return value


def as_node(value: Any) -> Any:
    """Plain data as nodes that dump in block style, like hand-written YAML."""
    if isinstance(value, Mapping):  # a null field is an absent one
        return CommentedMap((scalar(str(k)), as_node(v)) for k, v in value.items() if v is not None)
    if isinstance(value, list | tuple):
        return CommentedSeq(as_node(v) for v in value)
    return scalar(value) if isinstance(value, str) else value


def identity(item: Any, loose: bool = False) -> Any:
    if not isinstance(item, Mapping):
        return plain(item)
    keys = [k for k in ("id", "name", "provider", "model") if k in item]
    return tuple((k, plain(item[k])) for k in (keys[:1] if loose else keys))


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


def swap_rest(node: Any, rest: str | None = "") -> str:
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


def merge(old: Any, new: Any) -> Any:
    """`new` written over `old` in place, keeping the comments of what persists."""
    if old is new:
        return old
    if isinstance(old, CommentedMap) and isinstance(new, Mapping):
        rest = swap_rest(old)
        for key in [k for k in old if new.get(k) is None]:
            del old[key]
            old.ca.items.pop(key, None)  # or a re-added key would get its comment back
        for key, value in new.items():
            if value is not None:
                old[key] = merge(old[key], value) if key in old else as_node(value)
        swap_rest(old, rest)
        return old
    if isinstance(old, CommentedSeq) and isinstance(new, list | tuple):
        rest = swap_rest(old)
        comments, pool, merged = dict(old.ca.items), list(enumerate(old)), []
        for i, value in enumerate(new):
            # Match items by what they are, so "# paid fallback" follows its entry;
            # an edited entry keeps the comments of the one it replaces.
            found = next((p for p in pool if identity(p[1]) == identity(value)), None)
            if found is None and isinstance(value, Mapping):
                same = identity(value, loose=True)
                found = next((p for p in pool if same and identity(p[1], True) == same), None)
                found = found or next((p for p in pool if p[0] == i), None)
            if found is not None:
                pool.remove(found)
            merged.append(
                (None, as_node(value)) if found is None else (found[0], merge(found[1], value))
            )
        list.clear(old)
        old.ca.items.clear()
        for i, (origin, item) in enumerate(merged):
            old.append(item)
            if origin in comments:
                old.ca.items[i] = comments[origin]
        swap_rest(old, rest)
        return old
    if type(plain(old)) is type(new) and plain(old) == new:
        return old  # unchanged: keep its quoting and formatting
    return scalar(new, like=old) if isinstance(new, str) else as_node(new)


def append_item(seq: Any, item: Any) -> None:
    # Items separated by blank lines stay so, and what followed the list still does.
    sample = swap_rest(seq[-2], None) if len(seq) >= 2 else None
    rest = swap_rest(seq)
    gap = re.match(r"(?:[ \t]*\n)*", rest if sample is None else sample)
    seq.append(item)
    if len(seq) >= 2 and gap:
        swap_rest(seq[-2], "\n" * gap[0].count("\n"))
    swap_rest(seq, rest)


def provider_of(entry: Any) -> Any:
    return plain(entry.get("provider")) if isinstance(entry, Mapping) else None


def remove_item(parent: Any, section: str, index: int) -> None:
    """Delete an item in ruamel's tree (where yaml_lines cannot): its comments may move."""
    seq = parent[section]
    if index < len(seq) - 1:
        del seq[index]  # its trailing gap goes with it; the one before it stays
        return
    rest = swap_rest(seq)  # what followed the list must still follow it
    del seq[index]
    if seq:
        swap_rest(seq, rest)
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


def guess_indent(text: str) -> tuple[int, int]:
    """(mapping indent, list dash offset) as the file does it; 429chain's by default."""
    found = [re.search(_OPENER + tail, text, re.M) for tail in (r"[^\s#-]", "- ")]
    mapping, offset = (len(m[3]) - len(m[1]) - len(m[2] or "") if m else 2 for m in found)
    return max(mapping, 1), max(offset, 0)
