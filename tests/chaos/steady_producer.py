"""A producer process for chaos tests: enqueues noop jobs at a steady pace and reports each one.

``python -m tests.chaos.steady_producer COUNT PACE`` with ``CONVEYOR_*`` variables naming the
stack prints one JSON line per enqueue: ``{"id", "at", "took"}`` when it returned, or
``{"refused", "at", "took"}`` when it raised. ``at`` is the wall-clock time the enqueue began
(seconds since the epoch), ``took`` how long it blocked (a publish retried across a failover).
"""

from __future__ import annotations

import json
import os
import sys
import time

from jobs.errors import ServiceUnavailable
from jobs.settings import Settings
from producers import Client

#: Seconds each noop job sleeps: long enough to be in flight when a node dies.
JOB_SLEEP = 0.05


def main(count: int, pace: float) -> None:
    """Enqueue ``count`` jobs, one every ``pace`` seconds, printing what became of each."""
    with Client(Settings.from_env(os.environ)) as client:
        for _ in range(count):
            began, at = time.monotonic(), time.time()
            try:
                line = {"id": client.enqueue("noop", sleep=JOB_SLEEP).id}
            except ServiceUnavailable as exc:
                line = {"refused": str(exc)}
            took = time.monotonic() - began
            print(json.dumps({**line, "at": round(at, 3), "took": round(took, 3)}), flush=True)
            time.sleep(max(0.0, pace - took))


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
