"""The request log's buffer: records accepted and not yet committed, under one bound.

A record stays counted here from the request path's `put` until the writer
`release`s it, committed (or refused by the database, or given up at a stop
that timed out). The batch the writer holds while the database is down
therefore counts against the same bound as what waits behind it: memory is
bounded by `capacity` records however long an outage lasts, and only what
overflows it is refused (and counted by the caller).

It is a deque under a lock rather than a `queue.Queue` because a Queue's
bound covers only what is still queued, not the batch taken out of it, and
because the writer wants to be woken when a batch is full, not on every put:
`put` notifies only once the writer's wake-up threshold is reached.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

__all__ = ["Buffer"]

T = TypeVar("T")


class Buffer(Generic[T]):
    """A bounded FIFO shared by many producers and one consumer (the writer thread)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._items: deque[T] = deque()
        self._held = 0  # queued + taken but not released
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # the writer waits here
        self._drained = threading.Condition(self._lock)  # flush() waits here
        self._wake_at = 1  # queued items that wake the writer
        self.closed = False

    # ------------------------------------------------------------ producers

    def put(self, item: T) -> bool:
        """Accept `item` unless the buffer is full or closed; never blocks."""
        with self._lock:
            if self._held >= self.capacity or self.closed:
                return False
            self._items.append(item)
            self._held += 1
            if len(self._items) >= self._wake_at:
                self._ready.notify()
        return True

    @property
    def pending(self) -> int:
        """Items accepted and not yet released: queued plus the writer's batch."""
        return self._held

    def wait_drained(self, timeout: float) -> bool:
        """Wait until every item accepted so far is released; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._held:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._drained.wait(remaining)
        return True

    def close(self) -> None:
        """Refuse further puts and wake the writer so it drains what is left."""
        with self._lock:
            self.closed = True
            self._ready.notify_all()

    # ------------------------------------------------------------ the writer

    def wait(self, count: int, deadline: float) -> int:
        """Wait until `count` items are queued, the buffer closes or `deadline`; return queued."""
        with self._lock:
            self._wake_at = max(1, count)
            try:
                while len(self._items) < count and not self.closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._ready.wait(remaining)
                return len(self._items)
            finally:
                self._wake_at = 1

    def take(self, count: int) -> list[T]:
        """Take up to `count` queued items, oldest first; they stay pending until released."""
        with self._lock:
            n = min(count, len(self._items))
            return [self._items.popleft() for _ in range(n)]

    def release(self, count: int) -> None:
        """`count` taken items are done with (written, or given up and counted elsewhere)."""
        with self._lock:
            self._held -= count
            if self._held <= 0:
                self._held = 0
                self._drained.notify_all()

    def discard_queued(self) -> int:
        """Drop every queued item (a stop that gave up); returns how many."""
        with self._lock:
            n = len(self._items)
            self._items.clear()
            self._held -= n
            if self._held <= 0:
                self._held = 0
                self._drained.notify_all()
            return n
