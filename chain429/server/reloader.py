"""Hot reload: the running server follows its config file without a restart.

A reload reads and validates the whole file off the event loop, then swaps
one reference (`AppContext.snapshot`): requests in flight keep the snapshot they
started with. An invalid file never replaces the running config; its error
(file, line, field) is kept for `/health` and `/v1/admin/status`.

Rate-limit state belongs to the provider: it survives a reload while the
provider keeps its id, type, baseUrl and key, and starts fresh otherwise.
A pause (routing/pauses.py) survives a new key or URL, and ends when the
config no longer names what it paused (here, and at start).

The file is watched by polling its identity (inode, size, mtime) twice a
second: editors that save by writing a new file and renaming it over the old
one (vim, VS Code) change the inode, which a watch on the old file would miss.
The `.env` beside it is watched the same way, since `${VAR}`s resolve from
it: a key rotated there (`chain429 client rotate`) is in force, and the old
one refused, within a second, without anyone asking for a reload. A
variable set in the server's own environment still wins over `.env`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chain429.config.errors import ConfigError, ConfigIssue
from chain429.config.loader import load_config
from chain429.config.model import Config
from chain429.routing.limits import StateStoreUnavailable
from chain429.routing.pauses import stale_pauses
from chain429.routing.runtime import Snapshot, build_snapshot
from chain429.server.auth import exposure_problem

if TYPE_CHECKING:
    from chain429.server.context import AppContext

log = logging.getLogger("chain429.reload")

POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class ReloadResult:
    changed: bool
    generation: int
    error: list[dict[str, Any]] | None = None


Identity = tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _identity(path: Path) -> Identity:
    """The config file's and its `.env`'s (inode, size, mtime)."""
    return (_stat(path), _stat(path.parent / ".env"))


def config_digest(path: Path) -> str | None:
    """What a reload reads: the config file and the `.env` beside it (if any), hashed;
    None when the config file cannot be read."""
    try:
        digest = hashlib.sha256(path.read_bytes())
    except OSError:
        return None
    with contextlib.suppress(OSError):  # no .env: nothing it could change
        digest.update(b"\0.env\0" + (path.parent / ".env").read_bytes())
    return digest.hexdigest()


def _provider_identity(config: Config) -> dict[str, tuple[Any, ...]]:
    return {p.id: (p.type, p.resolved_base_url, p.api_key) for p in config.providers}


class Reloader:
    """Owns the path, the generation and the last reload's outcome for one app."""

    def __init__(self, ctx: AppContext, path: Path | None) -> None:
        self.ctx = ctx
        self.path = path
        self.last_reload_at: float | None = None
        self.last_error: list[dict[str, Any]] | None = None
        self.last_error_at: float | None = None
        self._digest = config_digest(path) if path else None
        self._identity = _identity(path) if path else None
        # Held by a reload and by an admin edit from write to swap, so the watcher
        # never reloads a file an edit is about to adopt (one change, one generation).
        self.lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def snapshot(self) -> Snapshot:
        return self.ctx.snapshot

    async def reload(self, *, force: bool = False) -> ReloadResult:
        """Read the file again; swap it in if it is valid and differs."""
        if self.path is None:
            return ReloadResult(False, self.snapshot.generation)
        async with self.lock:
            digest = await asyncio.to_thread(config_digest, self.path)
            if digest == self._digest and not force and self.last_error is None:
                return ReloadResult(False, self.snapshot.generation)
            try:
                config = await asyncio.to_thread(load_config, self.path)
                problem = exposure_problem(config, self.ctx.bind_host)
                if problem is not None:
                    message = f"this file would leave the server {problem}"
                    raise ConfigError([ConfigIssue(str(self.path), None, "settings", message)])
            except ConfigError as err:
                self.last_error = [
                    {"file": i.file, "line": i.line, "path": i.path, "message": i.message}
                    for i in err.issues
                ]
                self.last_error_at = time.time()
                self._digest = digest
                for issue in err.issues:
                    log.error(
                        "config not reloaded, keeping generation %d: %s",
                        self.snapshot.generation,
                        issue,
                    )
                return ReloadResult(False, self.snapshot.generation, self.last_error)
            self._digest = digest
            await self.adopt(config)
            return ReloadResult(True, self.snapshot.generation)

    async def adopt(self, config: Config, *, written_digest: str | None = None) -> Snapshot:
        """Swap in a validated config (after a reload, or an edit through the admin API)."""
        old = self.snapshot
        await self._forget_changed_providers(old.config, config)
        snapshot = build_snapshot(config, old.generation + 1)
        self.ctx.snapshot = snapshot
        await self.end_stale_pauses()
        self.last_error = self.last_error_at = None
        self.last_reload_at = time.time()
        if written_digest is not None:
            self._digest = written_digest
        if self.path is not None:
            self._identity = _identity(self.path)
        if self.ctx.serving:
            self.ctx.router.queues.notify()  # new entries may let queued requests through
        log.info("config generation %d in force", snapshot.generation)
        return snapshot

    async def _forget_changed_providers(self, old: Config, new: Config) -> None:
        before, after = _provider_identity(old), _provider_identity(new)
        state = self.ctx.state
        for provider_id, identity in before.items():
            if after.get(provider_id) != identity:
                await state.forget_provider(provider_id)

    async def end_stale_pauses(self) -> None:
        """End the pauses of providers and entries the config no longer has: adding one
        back starts it unpaused. With the shared store away, they wait for the next try."""
        state = self.ctx.state
        try:
            for pause in stale_pauses(self.snapshot, await state.pauses()):
                log.info("%s is no longer in the config: its pause ends", pause.label)
                await state.resume(pause.provider, pause.model)
        except StateStoreUnavailable as err:
            log.warning("could not end the pauses of removed entries: %s", err)

    # -- watching ----------------------------------------------------------

    def start_watching(self) -> None:
        if self.path is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop_watching(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _watch(self) -> None:
        assert self.path is not None
        while True:
            await asyncio.sleep(POLL_S)
            identity = await asyncio.to_thread(_identity, self.path)
            if identity[0] is None or identity == self._identity:
                continue  # missing for a moment while an editor replaces it
            self._identity = identity
            try:
                await self.reload()
            except Exception:  # the watcher must outlive any one bad reload
                log.exception("config reload failed")

    def status(self) -> dict[str, Any]:
        return {
            "config_path": str(self.path) if self.path else None,
            "generation": self.snapshot.generation,
            "loaded_at": self.snapshot.loaded_at,
            "last_reload_at": self.last_reload_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }
