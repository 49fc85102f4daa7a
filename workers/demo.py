"""``conveyor demo``: the whole flow in one process, on the embedded stack.

In-process broker, SQLite store, ``.eml`` outbox: nothing to install or start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dramatiq
from PIL import Image, ImageDraw

from jobs.email.transport import FileOutbox
from jobs.errors import JobFailed
from jobs.settings import Settings
from jobs.store import JobInfo
from jobs.store.migrate import ensure_database, upgrade
from producers import Client, Job
from workers.runtime import build_worker_stack

DEMO_DATABASE_URL = "sqlite:///.conveyor/demo.db"
DEMO_ARTIFACT_URL = f"file://{Path('.conveyor/artifacts').resolve()}"
DEMO_THREADS = 4


@dataclass(frozen=True)
class DemoJob:
    """One job the demo enqueues, and why."""

    title: str
    enqueue: Callable[[Client], Job]


DEMO_JOBS = (
    DemoJob("a quick no-op", lambda c: c.enqueue("noop", sleep=0.05)),
    DemoJob("a slower no-op", lambda c: c.enqueue("noop", sleep=0.3)),
    DemoJob(
        "fails twice, then succeeds",
        lambda c: c.enqueue("noop", fail_attempts=2, min_backoff=0.2, max_backoff=0.5),
    ),
    DemoJob("delayed by 1 s", lambda c: c.enqueue("noop", delay=1.0)),
    DemoJob(
        "a welcome email, to the outbox",
        lambda c: c.send_email("ada@example.com", "welcome", {"name": "Ada"}),
    ),
    DemoJob("a thumbnail set from one photo", lambda c: _thumbnail_set(c)),
    DemoJob("fails permanently", lambda c: c.enqueue("noop", permanent=True)),
    DemoJob(
        "retries exhausted",
        lambda c: c.enqueue("noop", fail_attempts=9, max_retries=1, min_backoff=0.1, max_backoff=0.2),
    ),
)


def _thumbnail_set(client: Client) -> Job:
    source = client.put_artifact(_sample_photo(), name="sample.jpg")
    return client.process_image(
        source,
        variants=[
            {"name": "small", "operations": [{"op": "thumbnail", "width": 160, "height": 160}]},
            {
                "name": "medium",
                "operations": [{"op": "thumbnail", "width": 640, "height": 640}],
                "format": "webp",
            },
            {
                "name": "square",
                "operations": [
                    {"op": "resize", "width": 300, "height": 300, "mode": "fill"},
                    {"op": "watermark", "text": "Conveyor"},
                ],
                "format": "png",
            },
        ],
    )


def _sample_photo() -> bytes:
    """A 2400×1600 JPEG drawn on the spot: a sky gradient, a sun, hills."""
    width, height = 2400, 1600
    sky = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    image = Image.merge(
        "RGB",
        (
            sky.getchannel(0).point(lambda v: 60 + v // 3),
            sky.getchannel(0).point(lambda v: 120 + v // 3),
            Image.new("L", (width, height), 230),
        ),
    )
    draw = ImageDraw.Draw(image)
    draw.ellipse((1700, 200, 2000, 500), fill=(255, 210, 80))
    draw.polygon(
        [(0, 1600), (0, 1100), (700, 800), (1400, 1150), (2400, 900), (2400, 1600)], fill=(60, 130, 70)
    )
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def embedded_settings(base: Settings) -> Settings:
    """The demo's stack: in-process broker and SQLite, unless the caller chose a database."""
    database_url = base.database_url if base.database_url.startswith("sqlite") else DEMO_DATABASE_URL
    settings = base.with_overrides(
        broker_url="memory://", database_url=database_url, artifact_url=base.artifact_url or DEMO_ARTIFACT_URL
    )
    # The demo needs no Redis: without a cache it never tries to reach one.
    return dataclasses.replace(settings, report_cache_ttl=0)


def run_demo(settings: Settings, *, on_event: Callable[[str], None] = print) -> list[tuple[str, JobInfo]]:
    """Run the demo jobs through an in-process worker; return each job's final row with its title."""
    ensure_database(settings.database_url)
    stack = build_worker_stack(settings, threads=DEMO_THREADS)
    upgrade(stack.db)
    worker = dramatiq.Worker(stack.broker, worker_threads=DEMO_THREADS, worker_timeout=100)
    worker.start()
    client = Client(settings, broker=stack.broker, db=stack.db)
    try:
        jobs = [(demo.title, demo.enqueue(client)) for demo in DEMO_JOBS]
        on_event(f"enqueued {len(jobs)} jobs; waiting for them to finish…")
        for title, job in jobs:
            with contextlib.suppress(JobFailed):
                job.wait(timeout=30)
            on_event(f"  {title}: {job.status.value} after {job.attempts} attempt(s)")
        for _, job in jobs:
            for artifact in (job.result or {}).get("artifacts", []):
                on_event(
                    f"  image {artifact['name']}: {artifact['width']}×{artifact['height']} "
                    f"{artifact['format']}, {artifact['size']:,} bytes"
                )
        report = client.enqueue("report", report="jobs_summary", formats=["html", "csv", "pdf"])
        with contextlib.suppress(JobFailed):
            report.wait(timeout=60)
        on_event(f"  jobs_summary report of these jobs: {report.status.value}")
        for artifact in (report.result or {}).get("artifacts", []):
            info = client.artifacts.info(artifact["id"])
            on_event(
                f"    {info.name} ({info.size:,} bytes): {(info.location or '').removeprefix('file://')}"
            )
        jobs.append(("the jobs_summary report", report))
        emails = [job for _, job in jobs if job.info.kind == "email" and job.status.value == "succeeded"]
        if emails and settings.smtp_url.startswith("file:"):
            folder = FileOutbox.from_url(settings.smtp_url).folder
            on_event(f"emails written to {', '.join(str(folder / f'{job.id}.eml') for job in emails)}")
        return [(title, job.info) for title, job in jobs]
    finally:
        worker.stop(timeout=10_000)
        client.close()
        stack.close()
