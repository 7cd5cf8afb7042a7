"""Client connections: total deadlines and a cap, so slow or hostile clients stay bounded.

Why this exists: Sanic measures its request timeout from the last byte
received, so a client that trickles one byte every few seconds keeps a
connection forever (slowloris), and nothing caps how many connections are
open, so enough such clients exhaust file descriptors and memory. Here:

- request headers must be complete within `clientHeaderTimeoutMs`, counted
  from accept for a connection's first request and from the first byte of
  each later one; the body within `clientBodyTimeoutMs` of the headers' end.
  Neither is reset by bytes received. A late client gets a 408 in OpenAI's
  shape (a connection that sent nothing is just closed);
- a connection idle between requests closes after `keepAliveTimeoutMs`;
- past `maxConnections` open connections a new one gets a 503 and is closed
  at once (never queued), with one log line at most every `LOG_EVERY_S`.

Nothing here runs per chunk: the request path copies two timestamps Sanic
already keeps; a per-connection timer (Sanic's own, re-armed at most every
`tick_s`) compares them with the deadlines. Limits are read from the config
snapshot when a connection opens, so a reload applies to new connections.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
from dataclasses import dataclass
from time import monotonic
from typing import TYPE_CHECKING, Any

from sanic.exceptions import RequestTimeout, ServiceUnavailable
from sanic.http import Http, Stage
from sanic.log import error_logger
from sanic.server.protocols.http_protocol import HttpProtocol

from chain429.config.model import Settings
from chain429.upstream.openai_error import error_body

if TYPE_CHECKING:
    from chain429.server.context import App
    from chain429.server.metrics import Metrics

log = logging.getLogger("chain429")

LOG_EVERY_S = 10.0  # the connection-limit warning, at most this often
# File descriptors kept for everything but client connections (listening
# socket, database, log files, config watch) when sizing the cap to the limit.
RESERVED_FDS = 64

_REFUSED_BODY = error_body(
    "chain429 has too many open connections (settings.maxConnections); try again shortly",
    "server_error",
    "too_many_connections",
)
REFUSED_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%b" % (len(_REFUSED_BODY), _REFUSED_BODY)
)


def fd_allowance() -> int | None:
    """Connections the open-file limit can carry: two descriptors each (client and upstream)."""
    try:
        import resource
    except ImportError:  # not on this platform: nothing to fit
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(1, (soft - RESERVED_FDS) // 2)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_s: float = 10.0
    body_s: float = 60.0
    keep_alive_s: float = 15.0
    max_connections: int = 1024
    configured_max: int = 1024  # before fitting to the open-file limit
    tick_s: float = 1.0  # how often an open connection's deadlines are checked

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        header_s = settings.client_header_timeout_ms / 1000
        body_s = settings.client_body_timeout_ms / 1000
        keep_alive_s = settings.keep_alive_timeout_ms / 1000
        allowed = fd_allowance()
        configured = settings.max_connections
        return cls(
            header_s=header_s,
            body_s=body_s,
            keep_alive_s=keep_alive_s,
            max_connections=configured if allowed is None else min(configured, allowed),
            configured_max=configured,
            # A deadline is noticed at most a tenth of the shortest one late.
            tick_s=min(1.0, max(0.05, min(header_s, body_s, keep_alive_s) / 10)),
        )


@functools.lru_cache(maxsize=16)
def limits_for(settings: Settings) -> ConnectionLimits:
    """The limits of a config's settings, built once per config (a reload makes new ones)."""
    return ConnectionLimits.from_settings(settings)


class ConnectionGuard:
    """One app's open-connection count, the cap's refusals and its rate-limited warning."""

    def __init__(self, metrics: Metrics) -> None:
        self.open = 0
        self._metrics = metrics
        self._last_log = -math.inf
        self._unlogged = 0  # refusals since the last warning

    def admit(self, limits: ConnectionLimits) -> bool:
        if self.open < limits.max_connections:
            self.open += 1
            return True
        self._metrics.connections_refused.inc()
        self._unlogged += 1
        now = monotonic()
        if now - self._last_log >= LOG_EVERY_S:
            if self._unlogged == 1:
                log.warning(
                    "connection limit reached: %d connections open (settings.maxConnections); "
                    "new connections are refused with 503 until some close",
                    self.open,
                )
            else:
                log.warning(
                    "connection limit reached: %d connections open (settings.maxConnections); "
                    "refused %d new connections with 503 in the last %.0f s",
                    self.open,
                    self._unlogged,
                    now - self._last_log,
                )
            self._last_log = now
            self._unlogged = 0
        return False

    def release(self) -> None:
        self.open -= 1

    def timed_out(self, phase: str) -> None:
        self._metrics.connection_timeouts.labels(phase).inc()


class DeadlineHttp(Http):
    """Sanic's HTTP/1.1 cycle, remembering when the current request's headers began and ended."""

    __slots__ = ("head_began", "head_done")

    def __init__(self, protocol: Any) -> None:
        super().__init__(protocol)  # type: ignore[no-untyped-call]  # Sanic: no annotations
        self.head_began = monotonic()  # accept: the first request's clock starts here
        self.head_done = 0.0  # 0: no request's headers complete yet on this connection

    async def http1_request_header(self) -> None:
        # `_time` is when the last bytes arrived: for a request on a kept-alive
        # connection, its first bytes (they just woke this loop up).
        protocol = self.protocol
        if self.head_done:
            self.head_began = protocol._time
            self.head_done = 0.0
        await super().http1_request_header()  # type: ignore[no-untyped-call]  # Sanic: no annotations
        self.head_done = protocol._time  # the bytes that completed the headers


class GuardedHttpProtocol(HttpProtocol):
    """Sanic's HTTP protocol with total deadlines and the connection cap."""

    HTTP_CLASS = DeadlineHttp
    __slots__ = ("expired", "guard", "limits")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard: ConnectionGuard | None = None  # set once admitted
        self.expired = False  # a deadline passed: the connection is being closed

    def connection_made(self, transport: Any) -> None:
        app = self.app
        limits = limits_for(app.ctx.snapshot.config.settings)
        guard = app.ctx.connection_guard
        if not guard.admit(limits):
            self.recv_buffer = bytearray()
            transport.write(REFUSED_RESPONSE)
            transport.close()
            return
        self.limits = limits
        self.guard = guard
        super().connection_made(transport)  # type: ignore[no-untyped-call]  # Sanic: no annotations

    def connection_lost(self, exc: Exception | None) -> None:
        if self.guard is None:
            return  # refused at the door: Sanic never knew this connection
        self.guard.release()
        self.guard = None
        super().connection_lost(exc)  # type: ignore[no-untyped-call]  # Sanic: no annotations

    def check_timeouts(self) -> None:
        """Sanic's periodic check, with deadlines that received bytes do not move."""
        try:
            if not self._task:
                return
            http: DeadlineHttp = self._http
            limits = self.limits
            now = monotonic()
            stage = http.stage
            if stage is Stage.REQUEST or (stage is Stage.IDLE and not http.head_done):
                phase, left = "headers", http.head_began + limits.header_s - now
            elif http.request_body and stage in (Stage.HANDLER, Stage.IDLE):
                phase, left = "body", http.head_done + limits.body_s - now
            elif stage is Stage.IDLE:
                phase, left = "idle", self._time + limits.keep_alive_s - now
            elif http.upgrade_websocket:
                return
            else:
                phase, left = "response", self._time + self.response_timeout - now
            if left > 0:
                self._callback_check_timeouts = self.loop.call_later(
                    min(left, limits.tick_s), self.check_timeouts
                )
                return
            self._expire(http, phase, limits)
        except Exception:
            error_logger.exception("protocol.check_timeouts")

    def _expire(self, http: DeadlineHttp, phase: str, limits: ConnectionLimits) -> None:
        # Sanic answers the exception set here when the cancelled task can still
        # respond (headers or body under way: a 408); otherwise it just closes.
        if phase == "headers":
            http.exception = RequestTimeout(
                f"request headers not received within {limits.header_s:g} s"
            )
        elif phase == "body":
            http.exception = RequestTimeout(
                f"request body not received within {limits.body_s:g} s of its headers"
            )
        elif phase == "response":
            http.exception = ServiceUnavailable("Response Timeout")
        if not self.expired:  # counted once, though a drain may be cut again
            self.expired = True
            if phase in ("headers", "body") and self.guard is not None:
                self.guard.timed_out(phase)
            log.debug("client connection: %s deadline passed, closing", phase)
        assert self._task is not None
        if sys.version_info < (3, 14):
            self._task.cancel("Cancel connection task with a timeout")
        else:
            self._task.cancel()
        # After a 408 Sanic drains the rest of the body, which a trickler never
        # finishes: look again, and cancel that too (close() ends the timer).
        self._callback_check_timeouts = self.loop.call_later(limits.tick_s, self.check_timeouts)


def server_options(app: App) -> dict[str, Any]:
    """What `serve` and `ServerThread` both pass to Sanic to put the app on a socket."""
    limits = limits_for(app.ctx.snapshot.config.settings)
    if limits.max_connections < limits.configured_max:
        log.warning(
            "settings.maxConnections is %d but the open-file limit allows %d connections "
            "(two descriptors each, %d kept aside); using %d. Raise `ulimit -n` to serve more",
            limits.configured_max,
            limits.max_connections,
            RESERVED_FDS,
            limits.max_connections,
        )
    return {"protocol": GuardedHttpProtocol}
