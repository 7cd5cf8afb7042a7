"""What any file of the repository must never hold, whatever it is for.

A merge whose conflict was resolved in one file and not in another leaves
`<<<<<<<` lines behind; in a Python file the linters catch them, in the docs,
the web UI's files or the examples nothing else would.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from fixtures.servers import REPO

CONFLICT = re.compile(r"^(<{7}|>{7}) ", re.M)  # "=======" alone may underline a heading


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    return [
        REPO / name.decode()
        for name in listed
        if name and not name.endswith((b".png", b".svg", b".ico", b".db"))
    ]


def test_no_file_holds_a_merge_conflict():
    files = tracked_text_files()
    assert any(path.name == "README.md" for path in files)  # the listing found the repository
    marked = [
        str(path.relative_to(REPO))
        for path in files
        if path.is_file() and CONFLICT.search(path.read_text(errors="replace"))
    ]
    assert marked == []
