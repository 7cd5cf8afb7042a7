"""Items of the config's lists leave and move with the comment that describes them
(chain429.config.yaml_lines, through chain429.config.writer's edits)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain429.config.writer import ConfigEditError, apply_edit

NOTED = """\
version: 1
providers:
  # Groq: the fast one
  - id: groq
    type: groq
  # A box under the desk
  - id: local
    type: generic-openai
    baseUrl: http://127.0.0.1:1/v1
    # (its own note, deeper than the dash)
  # Cerebras: the backup
  - id: cb
    type: cerebras
chains:  # what clients ask for
  # The first chain
  - name: a
    entries:
      - {provider: groq, model: m}
  # The second chain
  - name: b
    entries:
      - provider: local
        model: m

  # The third chain
  - name: c
    entries:
      - {provider: cb, model: m}
# The end
"""


@pytest.mark.parametrize(
    ("kind", "name", "first", "after"),
    [
        ("chain", "a", "  # The first chain", "  # The second chain"),
        ("chain", "b", "  # The second chain", "  # The third chain"),  # and the gap after it
        ("chain", "c", "\n  # The third chain", "# The end"),  # the last: the gap before it
        ("provider", "groq", "  # Groq", "  # A box"),
        ("provider", "local", "  # A box", "  # Cerebras"),  # with its own deeper note
        ("provider", "cb", "  # Cerebras", "chains:"),
    ],
)
def test_a_removed_item_takes_the_comment_above_it_and_only_that(
    tmp_path: Path, kind: str, name: str, first: str, after: str
) -> None:
    """The comment that describes an item goes with it, never onto the next item."""
    path = tmp_path / "noted.yaml"
    path.write_text(NOTED)
    if kind == "provider":  # free the provider first (a chain edit, not a removal)
        user = {"groq": "a", "local": "b", "cb": "c"}[name]
        entries = [{"provider": "groq" if name != "groq" else "cb", "model": "m"}]
        apply_edit(path, lambda doc: doc.upsert_chain({"name": user, "entries": entries}))
    before = path.read_text()
    start = before.index(first)
    gone = before[start : before.index(after, start)]
    if kind == "chain":
        apply_edit(path, lambda doc: doc.delete_chain(name))
    else:
        apply_edit(path, lambda doc: doc.delete_provider(name))
    assert path.read_text() == before.replace(gone, "", 1)
    assert f"name: {name}\n" not in path.read_text() and f"id: {name}\n" not in path.read_text()


ENTRIES = """\
version: 1
settings:
  defaultChain: b
providers:
  - {id: groq, type: groq}
  - {id: openai, type: openai}
  - {id: cb, type: cerebras}
chains:
  - name: a
    entries:
      # free first
      - provider: groq
        model: m
      # paid fallback
      - provider: openai
        model: x
  # The second chain
  - name: b
    entries:
      - {provider: groq, model: m}
      - {provider: cb, model: m}   # backup
  # Only the paid one
  - name: c
    entries:
      - provider: openai
        model: x
# The end
"""
FREE = "      # free first\n      - provider: groq\n        model: m\n"
PAID = "      # paid fallback\n      - provider: openai\n        model: x\n"


def test_entries_move_and_insert_with_the_comment_that_describes_them(tmp_path: Path) -> None:
    path = tmp_path / "entries.yaml"
    path.write_text(ENTRIES)
    apply_edit(path, lambda doc: doc.move_entry("a", 1, 0))
    assert path.read_text() == ENTRIES.replace(FREE + PAID, PAID + FREE)
    new = {"provider": "cb", "model": "z"}
    apply_edit(path, lambda doc: doc.add_entry("a", new, 1))  # between the two
    added = "      - provider: cb\n        model: z\n"
    assert path.read_text() == ENTRIES.replace(FREE + PAID, PAID + added + FREE)
    apply_edit(path, lambda doc: doc.delete_entry("a", 0))
    assert path.read_text() == ENTRIES.replace(FREE + PAID, added + FREE)
    with pytest.raises(ConfigEditError) as caught:
        apply_edit(path, lambda doc: doc.delete_entry("c", 0))
    assert caught.value.status == 409 and "only entry" in caught.value.message


def test_removing_a_provider_with_cascade_takes_its_entries_and_emptied_chains(
    tmp_path: Path,
) -> None:
    path = tmp_path / "entries.yaml"
    path.write_text(ENTRIES)
    with pytest.raises(ConfigEditError) as caught:
        apply_edit(path, lambda doc: doc.delete_provider("openai"))
    assert caught.value.status == 409 and caught.value.names == ("a", "c")
    _, emptied = apply_edit(path, lambda doc: doc.delete_provider("openai", cascade=True))
    assert emptied == ["c"]
    gone = [
        "  - {id: openai, type: openai}\n",
        PAID,
        ENTRIES[ENTRIES.index("  # Only") : ENTRIES.index("# The end")],
    ]
    expected = ENTRIES
    for text in gone:
        expected = expected.replace(text, "")
    assert path.read_text() == expected and expected.endswith("backup\n# The end\n")
    before = path.read_text()
    with pytest.raises(ConfigEditError) as caught:  # b, the default, would be left empty
        apply_edit(path, lambda doc: [doc.delete_provider(p, cascade=True) for p in ("cb", "groq")])
    assert caught.value.status == 409 and "default chain 'b'" in caught.value.message
    assert path.read_text() == before
