"""Who serves with this instance: a heartbeat on the shared store, and `GET /v1/admin/instances`.

Several chain429 processes sharing one Redis (N workers, N hosts) share
limits, but an operator also needs to see them: which are alive, which
version and config generation each runs, and above all whether they run the
same config — two instances with different limits on one entry would each
enforce their own against the shared counters. So each instance on a shared
store writes its record there every `stateLeaseMs / 3`, expiring after
`stateLeaseMs`: an instance killed without a goodbye leaves the list within
the lease time, as its concurrency slots do. A graceful stop withdraws at once.

The config digest compares configs without revealing them: a SHA-256 of the
resolved config (keys included, so a changed key counts as a difference),
cut to 16 hex digits, never the config itself. The settings that say where
one instance runs (host, port, its request log's file or URL) are left out:
they may rightly differ between instances that serve the same config.

With the memory store there is nothing shared, and the list is this instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from sanic import Blueprint
from sanic.response import HTTPResponse, raw

from chain429 import __version__
from chain429.config.model import Config
from chain429.routing.limits import StoreDown, shared_store
from chain429.server.auth import Scope, requires
from chain429.server.context import AppContext, AppRequest

if TYPE_CHECKING:
    from chain429.routing.redis_store import RedisStateStore

log = logging.getLogger("chain429")

# Where this one instance runs, not what it serves.
_PER_INSTANCE_SETTINGS = ("host", "port", "dbPath", "databaseUrl")


def config_digest(config: Config) -> str:
    """16 hex digits that differ when two instances' configs would route differently."""
    data = config.model_dump(mode="json", by_alias=True)
    settings = data.get("settings") or {}
    for name in _PER_INSTANCE_SETTINGS:
        settings.pop(name, None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Heartbeat:
    """This instance's record, and (on a shared store) its announcements there."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        shared = shared_store(ctx.state)
        self.id = shared.instance if shared else f"{socket.gethostname()}.{os.getpid()}"
        self.started_at = time.time()
        self._task: asyncio.Task[None] | None = None
        self._digest: tuple[int, str] = (0, "")  # (generation, its digest)

    def record(self) -> dict[str, Any]:
        snapshot = self.ctx.snapshot
        if self._digest[0] != snapshot.generation:
            self._digest = (snapshot.generation, config_digest(snapshot.config))
        return {
            "id": self.id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": __version__,
            "config_generation": snapshot.generation,
            "config_digest": self._digest[1],
            "started_at": self.started_at,
            "last_seen": time.time(),
        }

    def start(self) -> None:
        if (shared := shared_store(self.ctx.state)) is not None:
            self._task = asyncio.ensure_future(self._beat(shared))

    async def _beat(self, store: RedisStateStore) -> None:
        ttl_s = store.lease_s
        while True:
            with contextlib.suppress(StoreDown):  # Redis away: /health says so already
                await store.announce(self.record(), ttl_s)
            await asyncio.sleep(max(ttl_s / 3, 0.1))

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        shared = shared_store(self.ctx.state)
        assert shared is not None
        # A stop never waits on Redis: the record expires by itself after the lease.
        with contextlib.suppress(StoreDown, TimeoutError):
            async with asyncio.timeout(1.0):
                await shared.withdraw()

    async def listing(self) -> dict[str, Any]:
        """Every live instance on the store, this one first; `configs_differ` compares digests."""
        mine = self.record()
        problem = None
        others: list[dict[str, Any]] = []
        if (shared := shared_store(self.ctx.state)) is not None:
            try:
                others = [r for r in await shared.instances() if r.get("id") != self.id]
            except StoreDown as err:
                problem = str(err)
        others.sort(key=lambda r: (r.get("started_at") or 0, str(r.get("id"))))
        found = [mine, *others]
        return {
            "store": "memory" if shared is None else "redis",
            "this": self.id,
            "configs_differ": len({r.get("config_digest") for r in found}) > 1,
            "problem": problem,
            "instances": found,
        }


instance_routes = Blueprint("instances")


@instance_routes.get("/v1/admin/instances")
@requires(Scope.READ)
async def instances(request: AppRequest) -> HTTPResponse:
    body = await request.app.ctx.heartbeat.listing()
    return raw(json.dumps(body).encode(), 200, None, "application/json")
