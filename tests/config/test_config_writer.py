from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from chain429.config.writer import (
    ConfigDocument,
    ConfigEditError,
    apply_edit,
    mask_secret,
    write_atomically,
)

# Commented the way people comment their configs (and shaped like 429chain's example).
EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "commented.yaml"

SMALL = """\
# chain429 config: keep this comment
version: 1

settings:
  port: 3429          # the proxy's port
  apiKeys:
    - ${PROXY_KEY}
  defaultChain: main

providers:
  # Free first
  - id: groq
    type: groq
    apiKey: ${GROQ_API_KEY}   # from the environment
    timeout: 10000

  - id: openai
    type: openai
    apiKey: "sk-proj-abcdef123456"
    headers:
      Authorization: "Bearer sk-live-0123456789abcdef"
      X-Title: my app

# Chains below
chains:
  - name: main
    entries:
      - provider: groq
        model: llama-3.1-8b-instant
      - provider: openai   # paid fallback
        model: gpt-4o-mini
"""

ENV = {"PROXY_KEY": "proxy", "GROQ_API_KEY": "gsk-real", "MISTRAL_API_KEY": "m-real"}


@pytest.fixture
def example(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_bytes(EXAMPLE.read_bytes())
    return path


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "chain429.yaml"
    path.write_text(SMALL, encoding="utf-8")
    return path


def outside(text: str, start: str, end: str) -> tuple[str, str]:
    """The text before `start` and from `end` on: what an edit between them must not touch."""
    head = text.index(start)
    return text[:head], text[text.index(end, head) :]


def assert_outside_unchanged(before: str, after: str, start: str, end: str) -> str:
    head, tail = outside(before, start, end)
    assert after.startswith(head)
    assert after.endswith(tail)
    return after[len(head) : len(after) - len(tail)]


# --- round trip and comment preservation -------------------------------------


def test_unedited_example_round_trips_byte_for_byte(example: Path) -> None:
    assert ConfigDocument.load(example).text() == example.read_text(encoding="utf-8")


def test_update_provider_in_place_touches_only_that_node(example: Path) -> None:
    before = example.read_text(encoding="utf-8")
    config, result = apply_edit(
        example,
        lambda doc: doc.upsert_provider(
            {"id": "groq", "name": "Groq", "type": "groq", "timeout": 5000, "rateLimits": None}
        ),
    )
    after = example.read_text(encoding="utf-8")
    assert result == "updated"
    middle = assert_outside_unchanged(before, after, "  - id: groq\n", "\n  - id: cerebras\n")
    assert middle == (
        "  - id: groq\n"
        "    name: Groq\n"
        "    type: groq\n"
        '    apiKey: "gsk_your-key-here"\n'
        '    # baseUrl: "https://api.groq.com/openai/v1"  # the preset\'s\n'
        "    timeout: 5000   # answers fast: give up early and fall through\n"
    )
    # Still the second provider, and the snapshot returned is the new one.
    assert [p.id for p in config.providers][:3] == ["openrouter", "groq", "cerebras"]
    assert config.provider("groq").timeout == 5000
    assert config.provider("groq").rate_limits is None


def test_new_provider_is_appended_before_the_trailing_comments(example: Path) -> None:
    before = example.read_text(encoding="utf-8")
    provider = {
        "id": "mistral",
        "type": "generic-openai",
        "apiKey": "${MISTRAL_API_KEY}",
        "baseUrl": "https://api.mistral.ai/v1",
        "paid": False,
    }
    config, result = apply_edit(example, lambda doc: doc.upsert_provider(provider), environ=ENV)
    after = example.read_text(encoding="utf-8")
    assert result == "created"
    marker = "  # --- more you could add ---\n"
    middle = assert_outside_unchanged(before, after, marker, marker)
    assert middle == (
        "  - id: mistral\n"
        "    type: generic-openai\n"
        "    apiKey: ${MISTRAL_API_KEY}\n"
        "    baseUrl: https://api.mistral.ai/v1\n"
        "    paid: false\n"
        "\n"
    )
    assert config.provider("mistral").api_key == "m-real"
    assert "!!" not in after


def test_new_strings_are_quoted_only_when_pyyaml_would_misread_them(small: Path) -> None:
    doc = ConfigDocument.load(small)
    doc.upsert_provider({"id": "x", "type": "groq", "name": "on", "headers": {"X-Flag": "1:20"}})
    text = doc.text()
    assert '    name: "on"\n' in text
    assert '      X-Flag: "1:20"\n' in text
    assert doc.validate(environ=ENV).provider("x").name == "on"


def test_references_survive_verbatim_and_raw_keeps_them(small: Path) -> None:
    apply_edit(small, lambda doc: doc.patch_settings({"port": 8080}), environ=ENV)
    after = small.read_text(encoding="utf-8")
    assert after == SMALL.replace("port: 3429     ", "port: 8080     ")
    assert "    apiKey: ${GROQ_API_KEY}   # from the environment\n" in after
    raw = ConfigDocument.load(small).raw()
    assert raw["providers"][0]["apiKey"] == "${GROQ_API_KEY}"
    assert raw["settings"]["apiKeys"] == ["${PROXY_KEY}"]


def test_patch_settings_null_removes_and_new_keys_go_before_the_banner(example: Path) -> None:
    before = example.read_text(encoding="utf-8")
    apply_edit(
        example, lambda doc: doc.patch_settings({"normalizeResponses": None, "queueMode": True})
    )
    after = example.read_text(encoding="utf-8")
    start = "  normalizeResponses: false"
    middle = assert_outside_unchanged(before, after, start, "\n  # Queue mode: wait")
    assert middle == "  queueMode: true\n"


def test_chain_update_keeps_comments_of_entries_that_stay(example: Path) -> None:
    chain = {
        "name": "default",
        "entries": [
            {"provider": "groq", "model": "llama-3.1-8b-instant"},
            {"provider": "openai", "model": "gpt-4o"},
        ],
    }
    before = example.read_text(encoding="utf-8")
    apply_edit(example, lambda doc: doc.upsert_chain(chain))
    after = example.read_text(encoding="utf-8")
    middle = assert_outside_unchanged(before, after, "  - name: default\n", "\n  # Fast chain")
    assert middle == (
        "  - name: default\n"
        "    entries:\n"
        "      - provider: groq\n"
        '        model: "llama-3.1-8b-instant"\n'
        "      - provider: openai        # paid fallback\n"
        '        model: "gpt-4o"\n'
    )


def test_new_chain_and_deleting_it_again_restore_the_file(example: Path) -> None:
    before = example.read_bytes()
    chain = {"name": "tiny", "entries": [{"provider": "groq", "model": "llama-3.1-8b-instant"}]}
    apply_edit(example, lambda doc: doc.upsert_chain(chain))
    assert b"  - name: tiny\n" in example.read_bytes()
    apply_edit(example, lambda doc: doc.delete_chain("tiny"))
    assert example.read_bytes() == before


def test_deleting_the_last_provider_keeps_the_next_sections_banner(example: Path) -> None:
    before = example.read_text(encoding="utf-8")
    config, _ = apply_edit(example, lambda doc: doc.delete_provider("google-ai"))
    after = example.read_text(encoding="utf-8")
    middle = assert_outside_unchanged(before, after, "  - id: google-ai\n", "  # --- more you")
    assert middle == ""
    assert "google-ai" not in {p.id for p in config.providers}


# --- secrets -----------------------------------------------------------------


def test_masked_shows_references_and_hides_literals(tmp_path: Path) -> None:
    text = SMALL.replace(
        "  defaultChain: main\n",
        "  defaultChain: main\n"
        "  adminKeys: [admin-secret-0123456789]\n"
        "  databaseUrl: postgresql://app:hunter2hunter2@db:5432/logs\n",
    )
    doc = ConfigDocument.from_text(text)
    masked = doc.masked()
    groq, openai = masked["providers"]
    assert groq["apiKey"] == "${GROQ_API_KEY}"
    assert openai["apiKey"] == "sk-\u20263456"
    assert openai["headers"] == {"Authorization": "Bea\u2026cdef", "X-Title": "my app"}
    assert masked["settings"]["apiKeys"] == ["${PROXY_KEY}"]
    assert masked["settings"]["databaseUrl"] == "postgresql://app:\u2026@db:5432/logs"
    dumped = json.dumps(masked)
    for secret in ("abcdef12", "0123456789", "hunter2hunter2", "admin-secret"):
        assert secret not in dumped
    assert doc.raw()["providers"][1]["apiKey"] == "sk-proj-abcdef123456"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("${GROQ_API_KEY}", "${GROQ_API_KEY}"),
        ("Bearer ${TOKEN}", "Bearer ${TOKEN}"),
        ("sk-proj-abcdef123456", "sk-\u20263456"),
        ("${KEY:-sk-proj-abcdef123456}", "${KEY:-sk-\u20263456}"),
        ("$${NOT_A_REF}", "$${\u2026REF}"),  # an escaped `${` is a literal
        ("abcdefghij", "\u2026ghij"),
        ("abc", "\u2026"),
    ],
)
def test_mask_secret(value: str, shown: str) -> None:
    assert mask_secret(value) == shown


@pytest.mark.parametrize(
    "api_key", [None, "omit", "sk-\u20263456"], ids=["null", "omitted", "masked"]
)
def test_provider_put_without_a_new_key_keeps_the_old_one(small: Path, api_key: str | None) -> None:
    provider = {"id": "openai", "type": "openai", "apiKey": api_key, "timeout": 9000}
    if api_key == "omit":
        del provider["apiKey"]
    provider["headers"] = ConfigDocument.load(small).masked()["providers"][1]["headers"]
    config, _ = apply_edit(small, lambda doc: doc.upsert_provider(provider), environ=ENV)
    openai = config.provider("openai")
    assert openai.api_key == "sk-proj-abcdef123456"
    assert openai.headers["Authorization"] == "Bearer sk-live-0123456789abcdef"
    assert openai.timeout == 9000


def test_masked_document_sent_back_changes_nothing(example: Path) -> None:
    before = example.read_bytes()
    masked = ConfigDocument.load(example).masked()

    def put_everything_back(doc: ConfigDocument) -> None:
        for provider in masked["providers"]:
            doc.upsert_provider(provider)
        for chain in masked["chains"]:
            doc.upsert_chain(chain)
        doc.patch_settings(masked["settings"])

    apply_edit(example, put_everything_back)
    assert example.read_bytes() == before


def test_a_new_key_replaces_the_old_one_keeping_its_quotes(small: Path) -> None:
    provider = {"id": "openai", "type": "openai", "apiKey": "sk-new-key"}
    apply_edit(small, lambda doc: doc.upsert_provider(provider), environ=ENV)
    assert '    apiKey: "sk-new-key"\n' in small.read_text(encoding="utf-8")


# --- refused edits -------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda d: d.upsert_provider({"id": "groq", "type": "groq", "apiKye": "x"}), "apiKye"),
        (
            lambda d: d.upsert_chain(
                {"name": "x", "entries": [{"provider": "nope", "model": "m"}]}
            ),
            "chains[1].entries[0].provider",
        ),
        (lambda d: d.upsert_provider({"id": "groq", "type": "groq", "timeout": "soon"}), "timeout"),
        (lambda d: d.patch_settings({"colour": "blue"}), "settings.colour"),
        (lambda d: d.patch_settings({"defaultChain": "missing"}), "settings.defaultChain"),
        (lambda d: d.upsert_chain({"entries": []}), "name"),
    ],
    ids=[
        "unknown-key",
        "missing-provider",
        "wrong-type",
        "unknown-setting",
        "bad-default",
        "no-name",
    ],
)
def test_invalid_edit_is_422_and_leaves_the_file_alone(small: Path, edit, path: str) -> None:
    before, mtime = small.read_bytes(), small.stat().st_mtime_ns
    with pytest.raises(ConfigEditError) as caught:
        apply_edit(small, edit, environ=ENV)
    assert caught.value.status == 422
    assert any(path in issue.path for issue in caught.value.issues), caught.value.issues
    assert small.read_bytes() == before
    assert small.stat().st_mtime_ns == mtime
    assert sorted(os.listdir(small.parent)) == [small.name]


def test_unset_variable_in_new_provider_is_422(small: Path) -> None:
    provider = {"id": "m", "type": "groq", "apiKey": "${NOT_SET_ANYWHERE}"}
    with pytest.raises(ConfigEditError) as caught:
        apply_edit(small, lambda doc: doc.upsert_provider(provider), environ=ENV)
    assert caught.value.status == 422
    assert "NOT_SET_ANYWHERE" in str(caught.value)


def test_deleting_a_provider_in_use_is_409_naming_the_chains(example: Path) -> None:
    before = example.read_bytes()
    with pytest.raises(ConfigEditError) as caught:
        apply_edit(example, lambda doc: doc.delete_provider("groq"))
    assert caught.value.status == 409
    assert caught.value.names == ("default", "fast")
    assert "default, fast" in str(caught.value)
    assert example.read_bytes() == before


def test_deleting_the_default_chain_is_409(example: Path) -> None:
    with pytest.raises(ConfigEditError) as caught:
        apply_edit(example, lambda doc: doc.delete_chain("default"))
    assert caught.value.status == 409
    assert "settings.defaultChain" in str(caught.value)


@pytest.mark.parametrize("kind", ["provider", "chain"])
def test_deleting_something_unknown_is_404(small: Path, kind: str) -> None:
    before = small.read_bytes()
    with pytest.raises(ConfigEditError) as caught:
        if kind == "provider":
            apply_edit(small, lambda doc: doc.delete_provider("nope"))
        else:
            apply_edit(small, lambda doc: doc.delete_chain("nope"))
    assert caught.value.status == 404
    assert small.read_bytes() == before


# --- writing -------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_write_leaves_the_original_and_no_temp_file(
    small: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    before = small.read_bytes()

    def boom(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, failing, boom)  # wherever the writer calls it
    with pytest.raises(OSError, match="disk full"):
        apply_edit(small, lambda doc: doc.patch_settings({"port": 1}), environ=ENV)
    monkeypatch.undo()
    assert small.read_bytes() == before
    assert sorted(os.listdir(small.parent)) == [small.name]


def test_write_keeps_the_file_mode(small: Path) -> None:
    small.chmod(0o640)
    apply_edit(small, lambda doc: doc.patch_settings({"port": 1}), environ=ENV)
    assert stat.S_IMODE(small.stat().st_mode) == 0o640
    assert "port: 1 " in small.read_text(encoding="utf-8")


def test_write_atomically_creates_and_replaces_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.yaml"
    write_atomically(real, "a: 1\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    write_atomically(link, "a: 2\n")
    assert link.is_symlink()
    assert real.read_text() == "a: 2\n"
    assert sorted(os.listdir(tmp_path)) == ["link.yaml", "real.yaml"]


def test_crlf_file_stays_crlf(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(SMALL.replace("\n", "\r\n").encode())
    apply_edit(path, lambda doc: doc.patch_settings({"port": 1}), environ=ENV)
    data = path.read_bytes()
    assert b"port: 1 " in data
    assert data.count(b"\n") == data.count(b"\r\n")


def test_concurrent_edits_are_serialized(small: Path) -> None:
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def add(n: int) -> None:
        chain = {"name": f"c{n}", "entries": [{"provider": "groq", "model": f"m{n}"}]}
        barrier.wait()
        try:
            apply_edit(small, lambda doc: doc.upsert_chain(chain), environ=ENV)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    names = [c["name"] for c in ConfigDocument.load(small).raw()["chains"]]
    assert sorted(names) == sorted(["main", *(f"c{n}" for n in range(8))])


def test_edits_from_several_processes_are_serialized(small: Path) -> None:
    """A CLI edit and a server edit at once: neither may lose the other's change."""
    import subprocess
    import sys

    script = (
        "import sys; from pathlib import Path; from chain429.config.writer import apply_edit\n"
        "n = sys.argv[2]\n"
        "chain = {'name': 'p' + n, 'entries': [{'provider': 'groq', 'model': 'm' + n}]}\n"
        "for _ in range(3):\n"
        "    chain['name'] = chain['name'] + 'x'\n"
        "    apply_edit(Path(sys.argv[1]), lambda doc: doc.upsert_chain(dict(chain)),\n"
        f"               environ={ENV!r})\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(small), str(n)]) for n in range(6)]
    assert [proc.wait(timeout=60) for proc in procs] == [0] * 6
    names = {c["name"] for c in ConfigDocument.load(small).raw()["chains"]}
    expected = {f"p{n}" + "x" * k for n in range(6) for k in (1, 2, 3)}
    assert expected <= names


def test_a_file_with_flush_lists_keeps_its_indentation(tmp_path: Path) -> None:
    text = (
        "version: 1\n"
        "providers:\n"
        "- id: a\n"
        "  type: groq\n"
        "  apiKey: k\n"
        "chains:\n"
        "- name: c\n"
        "  entries:\n"
        "  - provider: a\n"
        "    model: m\n"
    )
    path = tmp_path / "flush.yaml"
    path.write_text(text)
    apply_edit(path, lambda doc: doc.upsert_provider({"id": "b", "type": "groq"}))
    assert path.read_text() == text.replace("chains:\n", "- id: b\n  type: groq\nchains:\n")


def test_deleting_the_only_chain_leaves_a_null_section_and_its_comments(tmp_path: Path) -> None:
    path = tmp_path / "one.yaml"
    path.write_text(
        "version: 1\n"
        "providers:\n  - id: a\n    type: groq\n"
        "chains:   # what clients ask for\n  - name: c\n    entries:\n"
        "      - provider: a\n        model: m\n\n# the end\n"
    )
    config, _ = apply_edit(path, lambda doc: doc.delete_chain("c"))
    assert config.chains == ()
    assert path.read_text().endswith("chains:   # what clients ask for\n\n# the end\n")


def test_unchanged_values_keep_their_spelling(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    text = "version: 1\nsettings:\n  accessLog: &on true\n  maxBodyBytes: 10_485_760\n"
    path.write_text(text)
    doc = ConfigDocument.load(path)
    assert doc.raw()["settings"] == {"accessLog": True, "maxBodyBytes": 10485760}
    apply_edit(path, lambda doc: doc.patch_settings(doc.raw()["settings"]))
    assert path.read_text() == text


ALIASED = """\
version: 1
providers:
  - id: a
    type: groq
chains:
  - name: fast
    entries: [{provider: a, model: m}]
  - name: smart
    entries: [{provider: a, model: n}]
# Apps that hard-code a model.
aliases:
  # app X
  gpt-4o-mini: fast  # since March

  # app Y
  claude-3-haiku: fast
# the end
"""


def test_aliases_are_set_and_deleted_with_their_comments(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(ALIASED)
    config, result = apply_edit(path, lambda doc: doc.set_alias("openai/gpt-4o", "smart"))
    assert result == "created"
    assert config.aliases["openai/gpt-4o"] == "smart"
    assert path.read_text().endswith("  claude-3-haiku: fast\n  openai/gpt-4o: smart\n# the end\n")
    _, result = apply_edit(path, lambda doc: doc.set_alias("gpt-4o-mini", "smart"))
    assert result == "updated"
    assert "  # app X\n  gpt-4o-mini: smart # since March\n" in path.read_text()  # its column
    assert apply_edit(path, lambda doc: doc.set_alias("gpt-4o-mini", "smart"))[1] == "unchanged"

    apply_edit(path, lambda doc: doc.delete_alias("gpt-4o-mini"))
    assert "app X" not in path.read_text() and "since March" not in path.read_text()
    kept = "# Apps that hard-code a model.\naliases:\n  # app Y\n  claude-3-haiku"
    assert kept in path.read_text()
    apply_edit(path, lambda doc: doc.delete_alias("claude-3-haiku"))
    config, _ = apply_edit(path, lambda doc: doc.delete_alias("openai/gpt-4o"))
    assert config.aliases == {}
    assert path.read_text().endswith("# Apps that hard-code a model.\naliases:\n# the end\n")


def test_a_chain_an_alias_names_is_not_deleted(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(ALIASED)
    with pytest.raises(ConfigEditError) as refused:
        apply_edit(path, lambda doc: doc.delete_chain("fast"))
    assert refused.value.status == 409
    assert "aliases name it: gpt-4o-mini, claude-3-haiku" in refused.value.message
    assert path.read_text() == ALIASED
    with pytest.raises(ConfigEditError) as unknown:
        apply_edit(path, lambda doc: doc.delete_alias("nope"))
    assert unknown.value.status == 404


def test_a_mapping_used_as_a_key_is_a_yaml_error_not_a_crash():
    """Found by the splice fuzzer: YAML lets a mapping be a key (`? {...}`); the editor
    refuses the file as invalid YAML, as the loader does, instead of raising TypeError."""
    with pytest.raises(ConfigEditError) as refused:
        ConfigDocument.from_text("version: 1\nsettings:\n  ? {apiKeys: [a]}\n  : 1\n")
    assert refused.value.status == 422
    assert "a key that is not text" in refused.value.issues[0].message
