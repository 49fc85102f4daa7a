"""A `conveyor worker` serving only no-op queues loads no image, PDF or template machinery,
in its supervisor or its processes (their mapped libraries show what Python imported)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from producers import Client
from tests.helpers import WorkerProcess

pytestmark = pytest.mark.integration

#: Shared libraries that Pillow, WeasyPrint (Pango) and Jinja's MarkupSafe load when imported.
HEAVY_LIBRARIES = ("PIL/_imaging", "libpango", "markupsafe/_speedups")


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
