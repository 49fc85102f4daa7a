"""Thumbnails per second for 12-megapixel JPEGs: Conveyor's image jobs vs a plain Pillow loop.

For 1 and 2 processes, with JPEG draft mode on and off: a plain Pillow loop (open, EXIF
transpose, thumbnail 256×256, save JPEG q85) in a process pool, then the same thumbnails as
`image` jobs through `conveyor worker --processes P --threads 1` (RabbitMQ, PostgreSQL, artifacts).

    .venv/bin/python bench/images.py [--jobs 40] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import prepare_database, running_worker

from jobs.settings import Settings
from producers import Client

DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_bench"
SIZE = (4000, 3000)


def photo() -> bytes:
    """A 12 MP JPEG with detail (noise and shapes), so that decoding costs what a photo costs."""
    noise = Image.effect_noise(SIZE, 60).convert("RGB")
    image = Image.blend(noise, Image.linear_gradient("L").resize(SIZE).convert("RGB"), 0.5)
    draw = ImageDraw.Draw(image)
    for i in range(40):
        draw.ellipse((i * 90, i * 60, i * 90 + 400, i * 60 + 300), outline=(255, i * 6, 0), width=8)
    image = image.filter(ImageFilter.SMOOTH)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def plain_thumbnail(args: tuple[bytes, bool]) -> int:
    data, draft = args
    image = Image.open(io.BytesIO(data))
    if draft:
        image.draft("RGB", (256, 256))  # before exif_transpose, which decodes the image
    else:
        image.load()  # decoded at full size: thumbnail() can no longer use draft mode
    image = ImageOps.exif_transpose(image) or image
    image.thumbnail((256, 256), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85, optimize=True, progressive=True)
    return len(out.getvalue())


def run_plain(data: bytes, jobs: int, processes: int, draft: bool) -> float:
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        pool.map(plain_thumbnail, [(data, draft)] * processes)  # warm up
        started = time.perf_counter()
        pool.map(plain_thumbnail, [(data, draft)] * jobs, chunksize=1)
        return jobs / (time.perf_counter() - started)


def run_conveyor(data: bytes, jobs: int, processes: int, draft: bool) -> float:
    namespace = f"bench-{secrets.token_hex(3)}"
    settings = Settings(database_url=DATABASE_URL, namespace=namespace)
    worker_settings = {
        "database_url": DATABASE_URL,
        "namespace": namespace,
        "image_draft": str(draft).lower(),
    }
    with Client(settings) as client:
        source = client.put_artifact(data, name="photo.jpg")
        queued = [
            client.process_image(source, [{"op": "thumbnail", "width": 256, "height": 256}])
            for _ in range(jobs)
        ]
        args = ("--processes", str(processes), "--threads", "1", "--queues", "images")
        with running_worker(worker_settings, *args):
            for job in queued:
                job.wait(timeout=600)
        infos = [job.info for job in queued]
        span = (max(i.finished_at for i in infos) - min(i.started_at for i in infos)).total_seconds()  # type: ignore[type-var,operator]
        return jobs / span


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    prepare_database(DATABASE_URL)
    data = photo()
    rows: list[dict[str, Any]] = []
    for processes in (1, 2):
        for draft in (True, False):
            plain = run_plain(data, args.jobs, processes, draft)
            conveyor = run_conveyor(data, args.jobs, processes, draft)
            rows.append(
                {
                    "processes": processes,
                    "draft": draft,
                    "plain_pillow_per_s": round(plain, 1),
                    "conveyor_per_s": round(conveyor, 1),
                    "ratio": round(conveyor / plain, 2),
                }
            )
    if args.json:
        print(json.dumps({"source_bytes": len(data), "size": SIZE, "rows": rows}, indent=2))
        return
    print(f"12 MP JPEG ({len(data):,} bytes) → 256×256 JPEG thumbnails, {args.jobs} per run")
    print(f"{'processes':>9} {'draft':>6} {'plain Pillow/s':>15} {'Conveyor/s':>11} {'ratio':>6}")
    for r in rows:
        print(
            f"{r['processes']:>9} {'on' if r['draft'] else 'off':>6} {r['plain_pillow_per_s']:>15} "
            f"{r['conveyor_per_s']:>11} {r['ratio']:>6}"
        )


if __name__ == "__main__":
    main()
