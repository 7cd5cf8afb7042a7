"""What `serve --workers` does with the workers that outlive a stop during start-up.

Sanic ignores SIGINT and SIGTERM in a worker until its event loop handles them,
so a worker the manager stops in that window never hears it: it goes on to
start and serve, and the manager would wait for it for ever. The race is a few
milliseconds wide in a real start (tests/cli/test_serve_workers.py meets it
now and then); here each kind of straggler is a real process of its own.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass

from chain429.server.worker_manager import _stop_stragglers


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def is_alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Manager:
    processes: list[Worker]
    worker_state: dict[str, dict[str, str]]


def sleeper() -> subprocess.Popen[bytes]:
    # Python's default SIGINT handling: a SIGINT ends it (KeyboardInterrupt), as a
    # started worker's loop ends on it.
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])


def test_a_worker_that_started_after_the_stop_is_told_again_and_one_starting_is_killed():
    served = Worker("served", sleeper())  # acknowledged before the stop: finishing its work
    late = Worker("late", sleeper())  # acknowledged after the stop: it missed it
    starting = Worker("starting", sleeper())  # never acknowledged
    manager = Manager(
        [served, late, starting],
        {"served": {"state": "ACKED"}, "late": {"state": "ACKED"}, "starting": {}},
    )
    try:
        _stop_stragglers(manager, serving={"served"})
        assert late.proc.wait(timeout=10) == -signal.SIGINT  # it hears the stop this time
        assert starting.proc.wait(timeout=10) == -signal.SIGKILL
        assert served.is_alive()  # left to finish what it serves
    finally:
        for worker in manager.processes:
            worker.proc.kill()
            worker.proc.wait(timeout=10)
