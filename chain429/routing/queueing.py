"""Queue mode: a request whose chain is rate-limited waits for a recovery, in line.

Each chain has a FIFO line. Only the request at its head walks the chain
again, when the earliest known recovery arrives or something changed (a
request finished, a cooldown was recorded, the config was reloaded): no
polling. A request leaves the line when it is answered, when its deadline
passes, when its client disconnects, or when the server shuts down; the next
in line then gets its turn at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque


class QueueError(Exception):
    """Why a request left the queue unanswered: 503 with this code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Ticket:
    """One request's place in a chain's line."""

    def __init__(self, line: deque[Ticket], queues: Queues) -> None:
        self._line = line
        self._queues = queues
        self._event = asyncio.Event()
        self._woken = False
        self.entered_at = time.perf_counter()

    @property
    def at_head(self) -> bool:
        return bool(self._line) and self._line[0] is self

    def wake(self) -> None:
        self._woken = True
        self._event.set()

    async def turn(self, recovery: float, deadline: float) -> None:
        """Return when it is this request's turn to walk the chain again."""
        while True:
            if self._queues.closed:
                raise QueueError("queue_shutdown", "The server is shutting down.")
            now = time.time()
            if now >= deadline:
                raise QueueError(
                    "queue_timeout", "No entry of the chain recovered within the allowed wait."
                )
            if self.at_head and (self._woken or now >= recovery):
                self._woken = False
                return
            until = min(recovery, deadline) if self.at_head else deadline
            self._event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), max(0.0, until - now))

    def leave(self) -> None:
        was_head = self.at_head
        try:
            self._line.remove(self)
        except ValueError:
            return
        if was_head and self._line:
            # Whatever freed the head's turn may let the next request through too.
            self._line[0].wake()


class Queues:
    """The lines of every chain of one server."""

    def __init__(self) -> None:
        self._lines: dict[str, deque[Ticket]] = {}
        self.closed = False

    @property
    def depth(self) -> int:
        return sum(len(line) for line in self._lines.values())

    def enter(self, chain: str, max_size: int) -> Ticket:
        line = self._lines.setdefault(chain, deque())
        if len(line) >= max_size:
            raise QueueError("queue_full", f"{len(line)} requests already wait for this chain.")
        ticket = Ticket(line, self)
        line.append(ticket)
        return ticket

    def notify(self) -> None:
        """State changed (an answer, a cooldown, a reload): each head looks again."""
        for line in self._lines.values():
            if line:
                line[0].wake()

    def close(self) -> None:
        """Shutting down: every waiting request leaves with `queue_shutdown`."""
        self.closed = True
        for line in self._lines.values():
            for ticket in line:
                ticket.wake()
