"""The CPU the metrics hooks add to one attempt, measured alone (run as a subprocess).

Drives the real ``Metrics`` middleware (``jobs/middleware/metrics.py``) over a real Dramatiq
message of the no-op kind, with the replica's multiprocess value files in a fresh directory, as
a worker thread does: ``before_process_message``, then ``after_process_message`` with the
attempt's recorded outcome. The tallies are written every 400 attempts, about what one process
drains between two ticks. The same loop with a middleware that does nothing is subtracted.

Prints the microseconds per attempt (best of ``ROUNDS``: the least disturbed by other work).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from types import SimpleNamespace

#: Attempts per round, and rounds.
ATTEMPTS = 40_000
ROUNDS = 5
#: Attempts between two writes of the tallies (one tick of a process draining ~400 jobs/s).
PER_TICK = 400


def _loop(middleware: object, broker: object, proxy: object, flush: object) -> float:
    before = middleware.before_process_message  # type: ignore[attr-defined]
    after = middleware.after_process_message  # type: ignore[attr-defined]
    started = time.perf_counter()
    for index in range(ATTEMPTS):
        before(broker, proxy)
        after(broker, proxy, result=None)
        if index % PER_TICK == 0:
            flush()  # type: ignore[operator]
    return (time.perf_counter() - started) / ATTEMPTS


def main() -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="conveyor-hooks-")
    import dramatiq
    from dramatiq.broker import MessageProxy
    from dramatiq.middleware import Middleware

    from jobs import metrics
    from jobs.kinds import KINDS
    from jobs.middleware.metrics import Metrics
    from jobs.middleware.state import attach
    from jobs.status import AttemptOutcome

    metrics.enable(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    kind = KINDS["noop"]
    message = dramatiq.Message(
        queue_name="bench.default", actor_name=kind.actor_name, args=(), kwargs={}, options={}
    )
    proxy = MessageProxy(message)
    attempt = SimpleNamespace(outcome=AttemptOutcome.SUCCEEDED, began=time.monotonic())
    attach(proxy, attempt)  # type: ignore[arg-type]
    broker = None
    hooks = min(_loop(Metrics(), broker, proxy, metrics.flush) for _ in range(ROUNDS))
    empty = min(_loop(Middleware(), broker, proxy, lambda: None) for _ in range(ROUNDS))
    print(f"{max(hooks - empty, 0.0) * 1e6:.3f}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
