"""Image jobs end to end: artifacts in PostgreSQL, `conveyor worker`, RabbitMQ."""

from __future__ import annotations

import hashlib
import os

import pytest

from jobs.errors import JobFailed
from producers import Client
from tests.helpers import WorkerProcess, run_cli
from tests.images import jpeg, opened, png_bomb

pytestmark = pytest.mark.integration


def test_a_thumbnail_set_is_stored_as_artifacts_with_their_sizes(
    client: Client, start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    source = client.put_artifact(jpeg((1200, 800), orientation=6, gps=True), name="photo.jpg")
    job = client.process_image(
        source,
        variants=[
            {"name": "small", "operations": [{"op": "thumbnail", "width": 128, "height": 128}]},
            {
                "name": "large",
                "operations": [{"op": "thumbnail", "width": 640, "height": 640}],
                "format": "webp",
            },
        ],
    )

    artifacts = job.wait(timeout=30)["artifacts"]

    assert [(a["name"], a["width"], a["height"], a["format"]) for a in artifacts] == [
        ("photo-small.jpg", 85, 128, "jpeg"),
        ("photo-large.webp", 427, 640, "webp"),
    ]
    for artifact in artifacts:
        data = client.get_artifact(artifact["id"])
        assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
        assert len(data) == artifact["size"]
        assert opened(data).size == (artifact["width"], artifact["height"])
        assert not opened(data).getexif()


def test_a_decompression_bomb_fails_once_and_the_worker_goes_on(
    client: Client, start_worker: WorkerProcess.Factory
) -> None:
    start_worker("--processes", "1", "--threads", "1")
    bomb = client.process_image(client.put_artifact(png_bomb(), name="bomb.png"), [{"op": "grayscale"}])
    fine = client.process_image(client.put_artifact(jpeg((300, 200)), name="ok.jpg"), [{"op": "grayscale"}])

    with pytest.raises(JobFailed, match=r"decompression bomb|CONVEYOR_IMAGE_MAX_PIXELS"):
        bomb.wait(timeout=30)
    assert bomb.attempts == 1
    assert fine.wait(timeout=30)["artifacts"][0]["width"] == 300


@pytest.mark.parametrize(
    ("data", "message"),
    [(os.urandom(4000), "not an image"), (jpeg((800, 600))[:2500], "corrupt or truncated")],
)
def test_garbage_and_truncated_files_fail_permanently(
    client: Client, start_worker: WorkerProcess.Factory, data: bytes, message: str
) -> None:
    start_worker()
    job = client.process_image(client.put_artifact(data, name="x.jpg"), [])

    with pytest.raises(JobFailed, match=message):
        job.wait(timeout=30)
    assert job.attempts == 1


def test_bad_operations_and_missing_sources_are_refused_at_enqueue(client: Client) -> None:
    source = client.put_artifact(jpeg((10, 10)), name="x.jpg")
    with pytest.raises(ValueError, match="unknown image operation 'explode'"):
        client.process_image(source, [{"op": "explode"}])
    with pytest.raises(ValueError, match="no artifact"):
        client.process_image("9d1c1a0a-1111-4111-8111-111111111111", [])


def test_enqueue_image_from_the_shell_uploads_the_file(
    service_env: dict[str, str], client: Client, start_worker: WorkerProcess.Factory, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    start_worker()
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg((1000, 500)))

    result = run_cli(
        "enqueue",
        "image",
        "--file",
        str(photo),
        "--op",
        "thumbnail=100x100",
        "--op",
        "grayscale",
        "--format",
        "png",
        "--wait",
        "30",
        env=service_env,
    )

    assert result.returncode == 0, result.stderr
    (artifact,) = client.get(result.stdout.strip()).result["artifacts"]  # type: ignore[index]
    assert (artifact["width"], artifact["height"], artifact["format"]) == (100, 50, "png")
    assert opened(client.get_artifact(artifact["id"])).mode == "L"
