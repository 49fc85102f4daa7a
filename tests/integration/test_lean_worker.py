"""A `conveyor worker` serving only no-op queues loads no image, PDF or template machinery,
in its supervisor or its processes (their mapped libraries show what Python imported), and
none of the modules that only other kinds, encryption keys or admin commands need (Python's
own import log of the worker, ``PYTHONPROFILEIMPORTTIME``, shows what each process imported)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import delete

from jobs.settings import Settings
from jobs.store import Database
from jobs.store.tables import Jobs
from producers import Client
from tests.helpers import WorkerProcess

pytestmark = pytest.mark.integration

#: Shared libraries that Pillow, WeasyPrint (Pango), Jinja's MarkupSafe and ``cryptography``
#: (encryption at rest) load when imported.
HEAVY_LIBRARIES = ("PIL/_imaging", "libpango", "markupsafe/_speedups", "cryptography/hazmat/bindings/_rust")
#: Modules a no-op worker process must not import: each is imported on first use by whatever
#: needs it (the commands' ORM, encryption keys, the SQLite demo, GDPR lookups, the management
#: API), and each costs its share of every process's memory (docs/performance/index.md, issue 14).
UNNEEDED_IN_WORKERS = (
    "sqlalchemy.orm",
    "cryptography.hazmat",
    "sqlalchemy.dialects.sqlite",
    "email_validator",
    "urllib.request",
    # redis-py (8.7 MiB): the registry speaks through jobs/redis_lite.py; job code loads it.
    "redis",
)
#: What the supervisor must not import either: it only forks and watches its processes.
UNNEEDED_IN_SUPERVISOR = ("dramatiq", "sqlalchemy", "psycopg", "redis", "pika")


def _tree(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *(p for child in children for p in _tree(int(child)))]


def _heavy_libraries(pid: int) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {library for library in HEAVY_LIBRARIES if library in maps}


def test_a_noop_worker_runs_jobs_without_loading_other_kinds(
    start_worker: WorkerProcess.Factory, client: Client
) -> None:
    worker = start_worker("--processes", "2", "--threads", "2", "--queues", "default")
    assert client.enqueue("noop").wait(timeout=30) is not None
    pids = _tree(worker.process.pid)
    assert len(pids) == 3, pids
    assert {pid: _heavy_libraries(pid) for pid in pids} == {pid: set() for pid in pids}
    # The supervisor replaced the command line's program with one that imports only itself.
    assert b"lean_main" in Path(f"/proc/{worker.process.pid}/cmdline").read_bytes()


def test_an_image_worker_loads_pillow_where_it_runs_images(
    start_worker: WorkerProcess.Factory, client: Client
) -> None:
    from tests.images import jpeg

    worker = start_worker("--processes", "1", "--threads", "1", "--queues", "images")
    source = client.put_artifact(jpeg((64, 48)), name="tiny.jpg")
    client.process_image(source, [{"op": "thumbnail", "width": 8, "height": 8}]).wait(timeout=30)
    supervisor, child = _tree(worker.process.pid)
    assert _heavy_libraries(child) == {"PIL/_imaging"}
    assert _heavy_libraries(supervisor) == set()


def _imports(lines: list[str]) -> tuple[set[str], set[str]]:
    """The modules the supervisor imported before it started its processes, and those imported
    after (by its processes), from the import log of the program it replaced itself with."""
    program = max(i for i, line in enumerate(lines) if "import time: self [us]" in line)
    started = next(i for i, line in enumerate(lines) if "starting 1 worker processes" in line)
    assert program < started, "no import log of the supervisor's own program"

    def names(chunk: list[str]) -> set[str]:
        return {line.rsplit("|", 1)[1].strip() for line in chunk if line.startswith("import time:")}

    return names(lines[program + 1 : started]), names(lines[started:])


def _loaded(modules: set[str], names: tuple[str, ...]) -> set[str]:
    return {m for m in modules for name in names if m == name or m.startswith(name + ".")}


def test_a_noop_worker_imports_only_what_it_uses(start_worker: WorkerProcess.Factory, client: Client) -> None:
    worker = start_worker(
        "--processes", "1", "--threads", "2", "--queues", "default", env={"PYTHONPROFILEIMPORTTIME": "1"}
    )
    assert client.enqueue("noop").wait(timeout=30) is not None
    worker.terminate()
    supervisor, process = _imports(worker.lines)
    # The log is read right: the supervisor imported itself, its process the worker stack.
    assert "workers.supervisor" in supervisor
    assert {"workers.process", "sqlalchemy", "psycopg"} <= process
    assert _loaded(supervisor, UNNEEDED_IN_SUPERVISOR) == set()
    assert _loaded(process, UNNEEDED_IN_WORKERS) == set()


def test_a_worker_with_encryption_keys_loads_cryptography_when_it_seals(
    start_worker: WorkerProcess.Factory, settings: Settings, db: Database
) -> None:
    from jobs.crypto import generate_key

    keys = generate_key("k1")
    worker = start_worker(
        "--processes", "1", "--threads", "1", "--queues", "default", env={"CONVEYOR_ENCRYPTION_KEYS": keys}
    )
    with Client(settings.with_overrides(encryption_keys=keys)) as client:
        # The job's result is sealed in its row: the worker process loaded cryptography for it.
        job = client.enqueue("noop")
        try:
            assert job.wait(timeout=30)["attempt"] == 1
        finally:  # a row sealed with a key of its own would stop other tests' reads of the database
            with db.transaction() as connection:
                connection.execute(delete(Jobs).where(Jobs.id == job.id))
    supervisor, child = _tree(worker.process.pid)
    assert "cryptography/hazmat/bindings/_rust" in _heavy_libraries(child)
    assert _heavy_libraries(supervisor) == set()
