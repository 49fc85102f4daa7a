"""Worker processes of a chaos test: which to kill, and how to get rid of a replica that hangs."""

from __future__ import annotations

import contextlib
import os
import random
import signal
from collections.abc import Collection, Iterable
from pathlib import Path

from producers import Client
from tests.chaos.ledger import Ledger, parent_pid
from tests.helpers import WorkerProcess


def children(parent: int) -> set[int]:
    """Live processes whose parent is ``parent``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and parent_pid(int(entry.name)) == parent:
            found.add(int(entry.name))
    return found


def pick_victim(
    ledger: Ledger, job_ids: Iterable[str], replicas: Collection[WorkerProcess], spare: Collection[int] = ()
) -> int | None:
    """A worker process of one of ``replicas`` running jobs of ``job_ids`` right now (None if none).

    Only children of our own supervisors qualify, so a test never kills anyone else's process.
    Prefers the process with the most open attempts; ``spare`` are pids not to pick.
    """
    supervisors = {replica.process.pid for replica in replicas}
    busy = ledger.running_pids(job_ids)
    candidates = [
        (count, pid)
        for pid, count in busy.items()
        if pid not in spare and parent_pid(pid) in supervisors and _alive(pid)
    ]
    return max(candidates)[1] if candidates else None


def kill_replica(worker: WorkerProcess) -> None:
    """SIGKILL a replica's worker processes, then its supervisor (a test's last resort)."""
    for pid in children(worker.process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    worker.process.kill()
    worker.process.wait(timeout=10)


def enqueue_noops(client: Client, count: int, low: float, high: float, *, seed: int = 7) -> list[str]:
    """Enqueue ``count`` noop jobs sleeping between ``low`` and ``high`` seconds; their ids."""
    rng = random.Random(seed)
    return [client.enqueue("noop", sleep=round(rng.uniform(low, high), 3)).id for _ in range(count)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
