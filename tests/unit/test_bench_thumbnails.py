"""The thumbnail bench compares like with like: its plain Pillow loop and Conveyor's image
pipeline, given the same photo and the same settings, write the same bytes."""

from __future__ import annotations

import io
from pathlib import Path

from bench.thumbnails import OPERATIONS, photo, plain_thumbnail
from jobs.images.pipeline import Limits, Variant, render
from jobs.kinds import image


def test_the_plain_loop_and_the_image_job_make_the_same_thumbnail(tmp_path: Path) -> None:
    data = photo()
    source, target = tmp_path / "photo.jpg", tmp_path / "plain.jpg"
    source.write_bytes(data)
    plain_thumbnail((str(source), str(target)))

    # The payload the bench enqueues, through the kind's own checks, then the worker's pipeline
    # with the bench's settings (draft mode on, default caps).
    payload = image.validate(
        {
            "source": "00000000-0000-4000-8000-000000000000",
            "operations": OPERATIONS,
            "format": "jpeg",
            "quality": 85,
        }
    )
    (rendered,) = render(
        io.BytesIO(data),
        [Variant(name="", operations=[], format=payload["format"], quality=payload["quality"])],
        limits=Limits(max_bytes=len(data), max_pixels=12_000_000, draft=True),
        shared=payload["operations"],
        background=(255, 255, 255),
        keep_metadata=False,
    )
    out = io.BytesIO()
    rendered.save(out)

    assert rendered.image.size == (256, 192)
    assert out.getvalue() == target.read_bytes()
