"""The items of a YAML block list as lines of text, each with the comment that describes it.

ruamel.yaml keeps a comment line on the node *before* it, so in its tree the
comment above an item belongs to the item above: delete an item and its
comment ends up above the next one; move an item and its comment stays behind.
Cutting and reordering the text instead keeps each item and the comment lines
right above it together. The caller (chain429.config.writer) checks that the
new text parses to what it expected, and falls back to editing ruamel's tree
where the text is not laid out as these rules expect (a flow list, an alias).

The rules, for a list whose dashes are at column C:

- an item's own lines run from its dash to the last line before the next item
  (or before what follows the list) that is not *loose*; a loose line is blank,
  or a comment at column C or less. Deeper comments belong to the item above.
- the comment that describes an item is the run of loose comment lines right
  above its dash, with no blank line in between.
- blank lines and comments farther up stay where they are: they separate
  items, or say something about the list itself.

`cut_key` does the same for one `key: value` line of a block mapping (the
`aliases:` section): the line goes with the comment lines right above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

__all__ = ["Path", "cut", "cut_key", "node_at", "reorder"]

Path = tuple[str | int, ...]  # keys and indexes from the document to a list


@dataclass(frozen=True)
class _Layout:
    lines: list[str]
    blocks: list[tuple[int, int]]  # per item: [its comment's first line, end of its own lines)
    floor: int  # the first line after the list's key


def node_at(data: Any, path: Path) -> Any:
    for step in path:
        data = data[step]
    return data


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _dash_line(lines: list[str], seq: CommentedSeq, index: int) -> int | None:
    line, column = seq.lc.item(index)
    if lines[line][:column].rstrip().endswith("-"):
        return int(line)
    return line - 1 if line > 0 and lines[line - 1].strip() == "-" else None


def _following(lines: list[str], data: Any, path: Path) -> int | None:
    """The line where what comes after the list begins: its next sibling or an ancestor's."""
    for depth in range(len(path), 0, -1):
        parent, key = node_at(data, path[: depth - 1]), path[depth - 1]
        if isinstance(parent, CommentedMap):
            keys = list(parent)
            later = keys[keys.index(key) + 1 :]
            if later:
                return int(parent.lc.key(later[0])[0])
        elif isinstance(parent, CommentedSeq) and isinstance(key, int) and key + 1 < len(parent):
            return _dash_line(lines, parent, key + 1)
    return len(lines)


def _layout(text: str, data: Any, path: Path) -> _Layout | None:
    lines = text.splitlines(keepends=True)
    parent, key = node_at(data, path[:-1]), path[-1]
    seq = parent.get(key) if isinstance(parent, CommentedMap) else None
    if not isinstance(seq, CommentedSeq) or not seq or seq.fa.flow_style():
        return None
    floor = int(parent.lc.key(key)[0]) + 1
    dashes = [_dash_line(lines, seq, i) for i in range(len(seq))]
    after = _following(lines, data, path)
    if after is None or any(d is None for d in dashes):
        return None
    starts = [int(d) for d in dashes if d is not None]
    if starts != sorted(set(starts)) or starts[0] < floor or after <= starts[-1]:
        return None
    column = _indent(lines[starts[0]])
    if any(_indent(lines[start]) != column for start in starts):
        return None

    def loose(line: str) -> bool:
        return not line.strip() or (line.lstrip().startswith("#") and _indent(line) <= column)

    blocks, low = [], floor
    for start, bound in zip(starts, [*starts[1:], after], strict=True):
        end = bound
        while end > start + 1 and loose(lines[end - 1]):
            end -= 1
        above = start
        while above > low and lines[above - 1].strip() and loose(lines[above - 1]):
            above -= 1
        blocks.append((above, end))
        low = end
    return _Layout(lines, blocks, floor)


def cut(text: str, data: Any, path: Path, index: int) -> str | None:
    """`text` without item `index` of the list at `path` and its comment; None if the
    lines are not laid out as expected. `data` is `text` loaded by ruamel."""
    layout = _layout(text, data, path)
    if layout is None or not 0 <= index < len(layout.blocks):
        return None
    lines, blocks = layout.lines, layout.blocks
    above, end = blocks[index]
    if index == len(blocks) - 1:  # what follows the list keeps its gap; the one before goes
        low = blocks[index - 1][1] if index else layout.floor
        while above > low and not lines[above - 1].strip():
            above -= 1
    else:  # the next item keeps the gap before this one; this one's goes
        while end < blocks[index + 1][0] and not lines[end].strip():
            end += 1
    return "".join(lines[:above] + lines[end:])


def cut_key(text: str, data: Any, path: Path, key: str) -> str | None:
    """`text` without `key` of the mapping at `path`, and the comment lines right above
    it; None unless the key and its value sit on one line of a block mapping."""
    lines = text.splitlines(keepends=True)
    parent, name = node_at(data, path[:-1]), path[-1]
    mapping = parent.get(name) if isinstance(parent, CommentedMap) else None
    if not isinstance(mapping, CommentedMap) or key not in mapping or mapping.fa.flow_style():
        return None
    line = int(mapping.lc.key(key)[0])
    if int(mapping.lc.value(key)[0]) != line:
        return None  # the caller checks the result reads as expected: a longer value fails
    floor = int(parent.lc.key(name)[0]) + 1
    above, end = line, line + 1
    while above > floor and lines[above - 1].lstrip().startswith("#"):
        above -= 1
    if above == floor or not lines[above - 1].strip():  # no gap left open above the next key
        while end < len(lines) and not lines[end].strip():
            end += 1
    return "".join(lines[:above] + lines[end:])


def reorder(text: str, data: Any, path: Path, order: list[int]) -> str | None:
    """`text` with the items of the list at `path` in `order` (old indexes), each with
    its comment; what lies between items stays in place. None as for `cut`."""
    layout = _layout(text, data, path)
    if layout is None or sorted(order) != list(range(len(layout.blocks))):
        return None
    lines, blocks = layout.lines, layout.blocks
    out = lines[: blocks[0][0]]
    for slot, index in enumerate(order):
        out += lines[blocks[index][0] : blocks[index][1]]
        if slot + 1 < len(blocks):  # the gap (and loose comments) between two slots
            out += lines[blocks[slot][1] : blocks[slot + 1][0]]
    return "".join(out + lines[blocks[-1][1] :])
