"""Thumbnails: Conveyor ``image`` jobs against a plain Pillow process pool, at P processes.

The same 12-megapixel JPEG becomes a 256×256 JPEG thumbnail (JPEG draft mode, EXIF transpose,
LANCZOS, quality 85, optimized, progressive), N times per measurement:

- Conveyor: the source is stored once (``Client.put_artifact``); ``conveyor worker -p P -t 1
  --queues images`` runs P warm-up jobs, then the clock runs from just before
  ``Client.enqueue_many`` of N ``image`` jobs to the last one's ``finished_at``. The jobs' rows
  are polled every ``POLL`` seconds by primary key, so that the bench's own poll takes little of
  the 2 cores from the workers it measures (``finished_at`` is read from the rows: the interval
  does not shift the clock). The CPU of the worker and of the PostgreSQL backends serving the
  bench's database is reported per thumbnail.
- baseline: a ``multiprocessing`` pool of P processes (P warm-up thumbnails first) reading the
  source file and writing each thumbnail to a file; clocked around ``pool.map``.

Both sides write the same bytes (``tests/unit/test_bench_thumbnails.py``): the same draft scale,
resampling and encoder options. Only Conveyor syncs its output file to disk, as every artifact is.

Rate = N ÷ that time. Runs on its own::

    python -m bench.compare --only images --images 6 --runs 1
"""

from __future__ import annotations

import io
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    backend_cpu,
    cpu_seconds,
    job_outcomes,
    known_settings,
    new_client,
    running_worker,
    sql_connect,
    wait_succeeded,
)
from bench.sections import Comparison

SIZE = (4000, 3000)
BOX = (256, 256)
OPERATIONS = [{"op": "thumbnail", "width": BOX[0], "height": BOX[1]}]
#: Seconds between two polls of the timed jobs' rows.
POLL = 0.1


def photo() -> bytes:
    """A 12 MP JPEG with detail (noise and shapes), so that decoding costs what a photo costs."""
    from PIL import Image, ImageDraw, ImageFilter

    noise = Image.effect_noise(SIZE, 60).convert("RGB")
    image = Image.blend(noise, Image.linear_gradient("L").resize(SIZE).convert("RGB"), 0.5)
    draw = ImageDraw.Draw(image)
    for i in range(40):
        draw.ellipse((i * 90, i * 60, i * 90 + 400, i * 60 + 300), outline=(255, i * 6, 0), width=8)
    image = image.filter(ImageFilter.SMOOTH)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def plain_thumbnail(paths: tuple[str, str]) -> int:
    """The baseline's work for one image: source file in, thumbnail file out; returns its size."""
    from PIL import Image, ImageOps

    source, target = paths
    with Image.open(source) as opened:
        opened.draft("RGB", BOX)  # before exif_transpose, which decodes the image
        image = ImageOps.exif_transpose(opened) or opened
        image.thumbnail(BOX, Image.Resampling.LANCZOS)
        image.save(target, "JPEG", quality=85, optimize=True, progressive=True)
    return Path(target).stat().st_size


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class ThumbnailSection:
    name = "images"
    title = "Thumbnails: `image` jobs vs a plain Pillow process pool"

    def __init__(self, settings: dict[str, str], rabbit: Any, images: int, processes: list[int]) -> None:
        self.settings = known_settings({**settings, "image_draft": "true"})
        self.rabbit = rabbit
        self.images = images
        self.processes = processes
        self.queue = f"{settings['namespace']}.images"
        self.comparisons = [
            Comparison(
                f"thumbnails_p{p}",
                f"thumbnails/s, {p} process{'es' if p > 1 else ''}",
                "thumbnails/s",
                f"conveyor worker -p {p} -t 1 --queues images (draft mode on): image jobs, "
                "source and output in the artifact store",
                f"multiprocessing pool of {p}: Pillow on a source file, thumbnail to a file (draft mode on)",
            )
            for p in processes
        ]

    def config(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "processes": self.processes,
            "source": f"{SIZE[0]}×{SIZE[1]} JPEG, {len(getattr(self, 'data', b'')):,} bytes",
            "thumbnail": f"{BOX[0]}×{BOX[1]} JPEG q85",
        }

    def setup(self) -> None:
        self.data = photo()
        self.folder = tempfile.TemporaryDirectory(prefix="conveyor-bench-images-")
        self.source = str(Path(self.folder.name) / "photo.jpg")
        Path(self.source).write_bytes(self.data)
        self.sql = sql_connect(self.settings["database_url"])
        with new_client(self.settings) as client:
            self.artifact = client.put_artifact(self.data, name="photo.jpg")
        self.payload = {
            "source": self.artifact,
            "operations": OPERATIONS,
            "format": "jpeg",
            "quality": 85,
            "keep_metadata": False,
            "background": "#ffffff",
        }

    def close(self) -> None:
        if hasattr(self, "sql"):
            self._reset()
            self.sql.close()
            self.folder.cleanup()

    def _reset(self) -> None:
        self.rabbit.purge([f"{self.queue}{suffix}" for suffix in ("", ".DQ", ".XQ")])
        self.sql.execute("DELETE FROM jobs WHERE queue = %s", (self.queue,))

    def measure(self, run: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for p in self.processes:
            rate, cpu = self._baseline(p)
            metrics[f"thumbnails_p{p}.baseline"] = rate
            metrics[f"baseline_cpu_ms_per_thumbnail_p{p}"] = cpu * 1000
            rate, cpu, database = self._conveyor(p)
            metrics[f"thumbnails_p{p}.conveyor"] = rate
            metrics[f"conveyor_worker_cpu_ms_per_thumbnail_p{p}"] = cpu * 1000
            metrics[f"conveyor_postgres_cpu_ms_per_thumbnail_p{p}"] = database * 1000
        return metrics

    def _baseline(self, processes: int) -> tuple[float, float]:
        """Thumbnails per second, and CPU seconds per thumbnail (the pool's processes, reaped when
        it closes, warm-up included)."""

        def paths(count: int, tag: str) -> list[tuple[str, str]]:
            return [(self.source, str(Path(self.folder.name) / f"{tag}-{i}.jpg")) for i in range(count)]

        cpu_before = _children_cpu()
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            pool.map(plain_thumbnail, paths(processes, "warm"), chunksize=1)
            started = time.time()
            pool.map(plain_thumbnail, paths(self.images, "thumb"), chunksize=1)
            rate = self.images / (time.time() - started)
        return rate, (_children_cpu() - cpu_before) / (self.images + processes)

    def _conveyor(self, processes: int) -> tuple[float, float, float]:
        """Thumbnails per second, and CPU seconds per thumbnail (warm) of the worker and of the
        PostgreSQL backends serving the benchmark's database (the worker's, the client's and
        this poll's connections)."""
        self._reset()
        args = ("--processes", str(processes), "--threads", "1", "--queues", "images")
        with new_client(self.settings) as client, running_worker(self.settings, *args) as worker:
            warm = [job.id for job in client.enqueue_many("image", [self.payload] * processes)]
            wait_succeeded(lambda: job_outcomes(self.sql, warm), len(warm), worker, "warm-up image jobs")
            backends = backend_cpu(self.sql)
            cpu_before, started = cpu_seconds(worker.pid), time.time()
            timed = [job.id for job in client.enqueue_many("image", [self.payload] * self.images)]
            last = wait_succeeded(
                lambda: job_outcomes(self.sql, timed), len(timed), worker, "image jobs", interval=POLL
            )
            cpu = (cpu_seconds(worker.pid) - cpu_before) / self.images
            after = backend_cpu(self.sql)
        database = sum(seconds - backends.get(pid, 0.0) for pid, seconds in after.items())
        return self.images / (last - started), cpu, database / self.images
