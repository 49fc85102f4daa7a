"""Image caps end to end: a real `conveyor worker`, RabbitMQ, PostgreSQL.

What the requested sizes decide is refused at enqueue; what depends on the input fails that job
alone, permanently, naming the cap and the operation, and the worker goes on with the next."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import pytest
from PIL import Image

from jobs.errors import JobFailed
from jobs.store.artifacts import ArtifactStore
from jobs.store.database import Database
from producers import Client
from tests.helpers import WorkerProcess, run_cli
from tests.images import SECRET, jpeg, metadata_left, png_text_bomb, with_metadata

pytestmark = pytest.mark.integration
ROTATE_45 = {"op": "rotate", "degrees": 45}


def png(size: tuple[int, int], mode: str = "L", *, noise: bool = False) -> bytes:
    pixels = os.urandom(size[0] * size[1] * len(mode)) if noise else bytes(size[0] * size[1] * len(mode))
    buffer = io.BytesIO()
    Image.frombytes(mode, size, pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_issue_s_tiny_png_with_resize_and_three_rotations_is_refused_at_enqueue(client: Client) -> None:
    source = client.put_artifact(png((1, 1), "RGB"), name="tiny.png")
    operations = [{"op": "resize", "width": 10000, "height": 10000}, ROTATE_45, ROTATE_45, ROTATE_45]

    with pytest.raises(ValueError, match=r"image operation rotate \(#2 of the operations\) may make"):
        client.process_image(source, operations)


def test_the_shell_refuses_a_chain_over_the_cap_in_one_line_before_uploading_the_photo(
    service_env: dict[str, str], db: Database, tmp_path: Path
) -> None:
    photo = tmp_path / f"photo-{uuid.uuid4()}.jpg"  # the database is shared with other tests
    photo.write_bytes(jpeg((40, 30), gps=True))

    result = run_cli(
        "enqueue",
        "image",
        "--file",
        str(photo),
        "--op",
        "resize=10000x10000",
        "--op",
        "rotate=45",
        env=service_env,
    )

    assert result.returncode == 2, result.stderr
    assert "image operation rotate (#2 of the operations) may make" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert all(artifact.name != photo.name for artifact in ArtifactStore(db).recent(limit=10_000))


def test_a_job_over_the_pixel_cap_or_a_refused_header_fails_once_and_the_worker_goes_on(
    client: Client, db: Database, start_worker: WorkerProcess.Factory
) -> None:
    start_worker("--processes", "1", "--threads", "1")
    # 1×14200 pixels turned by 45° would be 10043×10042: known only once the header is read.
    over = client.process_image(client.put_artifact(png((1, 14_200)), name="thin.png"), [ROTATE_45])
    # Pillow refuses this one with a bare ValueError, which must not be retried as if transient.
    text_bomb = client.process_image(client.put_artifact(png_text_bomb(), name="text.png"), [])
    fine = client.process_image(client.put_artifact(jpeg((300, 200)), name="ok.jpg"), [ROTATE_45])

    with pytest.raises(
        JobFailed, match=r"rotate \(#1 of the operations\) .* CONVEYOR_IMAGE_MAX_OUTPUT_PIXELS"
    ):
        over.wait(timeout=30)
    assert over.attempts == 1
    with pytest.raises(JobFailed, match=r"MAX_TEXT_CHUNK"):
        text_bomb.wait(timeout=30)
    assert text_bomb.attempts == 1
    assert fine.wait(timeout=30)["artifacts"][0]["width"] > 300
    assert ArtifactStore(db).recent(job_id=over.id) == []


def test_an_output_over_the_byte_cap_fails_and_stores_nothing_while_the_next_job_runs(
    client: Client, db: Database, start_worker: WorkerProcess.Factory
) -> None:
    start_worker("--processes", "1", "--threads", "1", env={"CONVEYOR_IMAGE_MAX_OUTPUT_BYTES": "30000"})
    noisy = client.put_artifact(png((200, 200), "RGB", noise=True), name="noise.png")
    over = client.process_image(noisy, [], format="png")
    fine = client.process_image(noisy, [{"op": "thumbnail", "width": 40, "height": 40}], format="png")

    with pytest.raises(JobFailed, match=r"CONVEYOR_IMAGE_MAX_OUTPUT_BYTES=30,000 bytes"):
        over.wait(timeout=30)
    assert over.attempts == 1
    assert ArtifactStore(db).recent(job_id=over.id) == []
    assert fine.wait(timeout=30)["artifacts"][0]["width"] == 40


def test_stored_outputs_carry_no_comment_or_exif(client: Client, start_worker: WorkerProcess.Factory) -> None:
    start_worker()
    jobs = [
        client.process_image(
            client.put_artifact(with_metadata(fmt), name=f"x.{fmt.lower()}"), [], format="jpeg"
        )
        for fmt in ("JPEG", "GIF", "PNG", "WEBP")
    ]

    for job in jobs:
        (artifact,) = job.wait(timeout=30)["artifacts"]
        data = client.get_artifact(artifact["id"])
        assert metadata_left(data) == []
        assert SECRET not in data
