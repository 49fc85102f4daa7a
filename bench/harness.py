"""What the benchmark scripts share: a migrated database, and `conveyor worker` subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobs.store import Database
from jobs.store.migrate import ensure_database, upgrade


def prepare_database(url: str) -> None:
    """Create the benchmark's database when missing and migrate it."""
    ensure_database(url)
    db = Database(url)
    upgrade(db)
    db.dispose()


@contextmanager
def running_worker(settings: dict[str, str], *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`conveyor worker ARGS` with these ``CONVEYOR_*`` settings only; stopped (SIGTERM) on exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update({f"CONVEYOR_{name.upper()}": value for name, value in settings.items()})
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "worker", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=None if os.environ.get("BENCH_DEBUG") else subprocess.DEVNULL,
    )
    try:
        yield worker
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
