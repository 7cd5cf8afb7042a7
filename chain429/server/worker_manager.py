"""Sanic's worker manager, made safe to stop at any moment of `serve --workers`.

Two gaps in Sanic 25.x's manager, both met when SIGTERM or SIGINT arrives
while the workers are still starting (a supervisor restarting quickly, a
Ctrl-C right after `serve`):

* Its signal handler runs wherever the main thread happens to be, and it
  talks to the worker-state server (a multiprocessing manager). Landing in the
  middle of another call to that server, it reads that call's answer as its
  own: the manager crashes (`TypeError: 'NoneType' object is not a mapping`)
  and `serve` exits 1.
* Its wait for the workers' start re-posts the stop message without counting
  a miss, so once the workers it stopped are gone it waits for ever.

With `StopSignals` around `Sanic.serve`, the signal handler only notes the
signal; the manager acts on it where it waits and no call is in flight: in
the start-up wait and before each poll of its monitor pipe (every 0.1 s). A
second signal still kills the workers, as in Sanic.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# What a worker posts when it exits before it acknowledged its start.
TERMINATED_EARLY = "__TERMINATE_EARLY__"
# How long a stop during start-up waits for the stopped workers to exit.
WORKERS_EXIT_S = 5.0

log = logging.getLogger("sanic.error")


class StopSignals:
    """Stop signals noted from the start of `serve --workers`, acted on where the manager waits.

    A context manager around `Sanic.serve`: from entry, SIGINT and SIGTERM are
    only noted (before the manager exists, a stop could otherwise kill this
    process and leave the worker-state server behind); `manage`, the primary
    app's `main_process_ready` listener, hands the noted ones to the manager.
    """

    def __init__(self) -> None:
        self.pending: list[int] = []
        self._before: list[Any] = []

    def __enter__(self) -> StopSignals:
        self._before = [signal.signal(signum, self.note) for signum in STOP_SIGNALS]
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in zip(STOP_SIGNALS, self._before, strict=True):
            signal.signal(signum, handler)

    def note(self, signum: int, _frame: FrameType | None) -> None:
        self.pending.append(signum)

    def manage(self, app: Any, _: Any = None) -> None:
        """Make the manager of `app` (just built by `Sanic.serve`) act on the signals safely."""
        manager = app._manager
        shutdown_signal = manager.shutdown_signal
        pending = self.pending

        def act_on_signals() -> None:
            while pending:
                shutdown_signal(pending.pop(0), None)  # a second one kills: ServerKilled

        for signum in STOP_SIGNALS:  # the manager has just installed Sanic's handler
            signal.signal(signum, self.note)

        poll_monitor = manager._poll_monitor
        handle_message = manager._handle_message
        monitor = manager.monitor

        def poll_after_signals() -> Any:
            act_on_signals()
            return poll_monitor()

        def handle_unless_stopping(message: str) -> Any:
            if message == TERMINATED_EARLY and manager._shutting_down:
                return None  # a worker the stop ended (Sanic would read it as a restart order)
            return handle_message(message)

        def monitor_then_sanic_signals() -> None:
            monitor()
            # The manager now joins its workers: Sanic's own handler again (a signal
            # here is a second one, which kills), after any noted in the meantime.
            for signum in STOP_SIGNALS:
                signal.signal(signum, shutdown_signal)
            act_on_signals()

        manager._poll_monitor = poll_after_signals
        manager._handle_message = handle_unless_stopping
        manager.monitor = monitor_then_sanic_signals
        manager.wait_for_ack = lambda: wait_for_start(manager, act_on_signals)


def wait_for_start(manager: Any, act_on_signals: Any) -> None:
    """Sanic's wait for every worker to acknowledge its start, which a stop ends.

    A stop asked for meanwhile terminates the workers; once they are gone (at
    most `WORKERS_EXIT_S`) the wait records their exit and returns, and the
    monitor loop reads the stop message and shuts down the usual way. A worker
    that exits on its own before it starts, or workers slower than Sanic's
    threshold, stop the server with exit code 1, as in Sanic.
    """
    misses = 0
    while not manager._all_workers_ack():
        serving = _acked(manager)  # before a stop: the workers that will take it as one
        act_on_signals()
        if manager._shutting_down:
            deadline = time.monotonic() + WORKERS_EXIT_S
            while time.monotonic() < deadline and any(p.is_alive() for p in manager.processes):
                time.sleep(0.05)
            _stop_stragglers(manager, serving)
            manager._sync_states()  # the stopped workers count as stopped
            return
        if manager.monitor_subscriber.poll(0.1):
            message = manager.monitor_subscriber.recv()
            if message == TERMINATED_EARLY:
                log.error(
                    "A worker exited before it started serving (its error is above): "
                    "shutting down. `serve` without --workers shows the error on its own."
                )
                manager.kill()
            manager.monitor_publisher.send(message)  # for the monitor loop, as Sanic does
            continue
        misses += 1
        if misses > manager.THRESHOLD:
            log.error(
                "Not every worker started within %.0f s: shutting down.", manager.THRESHOLD / 10
            )
            manager.kill()


def _acked(manager: Any) -> set[str]:
    """The workers that have started serving (acknowledged their start)."""
    return {
        process.name
        for process in manager.processes
        if manager.worker_state.get(process.name, {}).get("state") == "ACKED"
    }


def _stop_stragglers(manager: Any, serving: set[str]) -> None:
    """Stop the workers that outlived the stop, which they cannot have taken as one.

    A worker takes the manager's SIGINT as its stop only once its event loop
    handles signals; Sanic ignores SIGINT and SIGTERM in the worker until then,
    so one that gets it earlier in its start-up goes on to start, and the
    manager would wait for it for ever. One still starting is killed: it has
    not served, so nothing is lost. One that started after the stop is told
    again, and stops the usual way, finishing what it already serves. One that
    served before the stop is still finishing its requests: left to it.
    """
    for process in manager.processes:
        if not process.is_alive() or process.name in serving:
            continue
        state = manager.worker_state.get(process.name, {}).get("state")
        with contextlib.suppress(ProcessLookupError):
            if state == "ACKED":
                log.warning(
                    "worker %s [%s] started after the stop, which it missed: stopping it",
                    process.name,
                    process.pid,
                )
                os.kill(process.pid, signal.SIGINT)
            else:
                log.warning(
                    "worker %s [%s] outlived the stop while starting: killed",
                    process.name,
                    process.pid,
                )
                os.kill(process.pid, signal.SIGKILL)
