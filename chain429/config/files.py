"""Writing a file so that a reader sees the old text or the new one, never half,
and one writer at a time (the config file: the server, the CLI and the web UI
all edit it through chain429.config.writer)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["one_writer", "write_atomically"]


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


@contextlib.contextmanager
def one_writer(path: Path) -> Iterator[None]:
    """Hold `path` against other writers: a thread lock within this process, and a
    file lock across processes."""
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(os.path.realpath(path), threading.Lock())
    with lock, _file_lock(path):
        yield
