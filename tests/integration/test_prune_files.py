"""`conveyor prune` removes what belongs to the jobs it deletes: output artifacts, source photos
and attachments no remaining job uses, their files, and the outbox's ``.eml`` copies: none of
them (a photo's GPS position, a saved email) outlives its job."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from jobs import crypto
from jobs.admin.files import remove_job_files
from jobs.crypto import Sealer
from jobs.keyring import Keyring
from jobs.settings import Settings
from jobs.store import Database
from producers import Client
from tests.helpers import run_cli

pytestmark = pytest.mark.integration

OLD = datetime.now(UTC) - timedelta(days=400)


@pytest.fixture
def stack(settings: Settings, db: Database, tmp_path: Path) -> Iterator[tuple[Settings, Client]]:
    """Artifacts in files under this test's folder; the email outbox a folder of ``.eml`` copies."""
    local = settings.with_overrides(
        artifact_url=f"file://{tmp_path}/artifacts", smtp_url=f"file://{tmp_path}/outbox"
    )
    (tmp_path / "outbox").mkdir()
    with Client(local, db=db) as client:
        yield local, client


def env_of(service_env: dict[str, str], settings: Settings) -> dict[str, str]:
    return {
        **service_env,
        "CONVEYOR_ARTIFACT_URL": settings.artifact_url,
        "CONVEYOR_SMTP_URL": settings.smtp_url,
    }


def insert_job(db: Database, kind: str, payload: dict[str, Any], finished: datetime) -> str:
    job_id = str(uuid.uuid4())
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (id, kind, queue, status, payload, attempts, created_at, finished_at) "
                "VALUES (:id, :kind, 'prune-files', 'succeeded', :payload, 1, :finished, :finished)"
            ),
            {"id": job_id, "kind": kind, "payload": json.dumps(payload), "finished": finished},
        )
    return job_id


def file_of(client: Client, artifact_id: str) -> Path:
    location = client.artifacts.info(artifact_id).location
    assert location is not None
    return Path(location.removeprefix("file://"))


def email_copy(settings: Settings, job_id: str) -> Path:
    path = Path(settings.smtp_url.removeprefix("file://")) / f"{job_id}.eml"
    path.write_bytes(b"To: ada@example.com\r\n\r\nhello")
    return path


def seed(db: Database, settings: Settings, client: Client) -> dict[str, Any]:
    """Old finished image and email jobs with their inputs, outputs and copies; a recent job
    sharing one of the inputs."""
    photo = client.put_artifact(b"jpeg with GPS", name="photo.jpg")
    shared = client.put_artifact(b"logo", name="logo.png")
    attachment = client.put_artifact(b"pdf", name="invoice.pdf")
    operations = [{"op": "grayscale"}]
    image_job = insert_job(db, "image", {"source": photo, "operations": operations, "format": "png"}, OLD)
    output = client.artifacts.put(b"png", name="out.png", job_id=image_job)
    email_payload = {"to": ["ada@example.com"], "template": "welcome", "context": {"name": "Ada"}}
    email_job = insert_job(db, "email", {**email_payload, "attachments": [attachment, shared]}, OLD)
    recent = insert_job(db, "image", {"source": shared, "operations": operations}, datetime.now(UTC))
    return {
        "gone": [file_of(client, a) for a in (photo, attachment, output.id)],
        "kept": file_of(client, shared),
        "emails": [email_copy(settings, email_job), email_copy(settings, image_job)],
        "recent_email": email_copy(settings, recent),
        "ids": {"photo": photo, "shared": shared, "attachment": attachment, "output": output.id},
    }


def test_prune_deletes_the_files_of_pruned_jobs_and_keeps_those_still_used(
    stack: tuple[Settings, Client], db: Database, service_env: dict[str, str]
) -> None:
    settings, client = stack
    files = seed(db, settings, client)
    env = env_of(service_env, settings)

    planned = run_cli("prune", "--older-than", "300d", "--dry-run", "--json", env=env)

    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["dry_run"] is True
    assert plan["artifacts"] >= 3
    assert plan["files"] >= 3
    assert plan["emails"] >= 2
    for path in [*files["gone"], *files["emails"], files["kept"]]:
        assert path.exists(), f"--dry-run deleted {path}"

    pruned = run_cli("prune", "--older-than", "300d", "--yes", env=env)

    assert pruned.returncode == 0, pruned.stderr
    assert "artifact file(s)" in pruned.stdout
    assert "email copy(ies)" in pruned.stdout
    for path in [*files["gone"], *files["emails"]]:
        assert not path.exists(), f"prune kept {path}"
    assert files["kept"].exists()  # the recent job still reads it
    assert files["recent_email"].exists()
    ids = files["ids"]
    assert sorted(client.artifacts.missing(ids.values())) == sorted(
        [ids["photo"], ids["attachment"], ids["output"]]
    )


def test_remove_job_files_serves_other_erasures_and_leaves_the_job_rows(
    stack: tuple[Settings, Client], db: Database
) -> None:
    settings, client = stack
    photo = client.put_artifact(b"jpeg", name="photo.jpg")
    job = insert_job(db, "image", {"source": photo, "operations": [{"op": "grayscale"}]}, OLD)
    output = client.artifacts.put(b"png", name="out.png", job_id=job)
    paths = [file_of(client, photo), file_of(client, output.id), email_copy(settings, job)]

    planned = remove_job_files(db, settings, [job], dry_run=True)
    removed = remove_job_files(db, settings, [job])

    assert (planned.artifacts, planned.files, planned.emails) == (2, 2, 1)
    assert removed == planned
    assert not any(path.exists() for path in paths)
    assert client.get(job).id == job  # the row is the caller's to delete or redact


def test_prune_sees_through_encrypted_payloads_when_it_decides_which_inputs_are_still_used(
    stack: tuple[Settings, Client], db: Database, service_env: dict[str, str]
) -> None:
    # With CONVEYOR_ENCRYPTION_KEYS a payload's text hides the artifact ids it names: prune must
    # open payloads both to find a pruned job's inputs and to see that a recent job still uses one.
    settings, client = stack
    keys = crypto.generate_key("k1")
    sealer = Sealer(Keyring.parse(keys))

    def insert_sealed(kind: str, payload: dict[str, Any], finished: datetime) -> str:
        job_id = insert_job(db, kind, {}, finished)
        with db.engine.begin() as connection:
            connection.execute(
                text("UPDATE jobs SET payload = :payload WHERE id = :id"),
                {"id": job_id, "payload": json.dumps(sealer.seal_json(payload, crypto.PAYLOAD, job_id))},
            )
        return job_id

    photo = client.put_artifact(b"jpeg with GPS", name="photo.jpg")
    shared = client.put_artifact(b"logo", name="logo.png")
    operations = [{"op": "grayscale"}]
    insert_sealed("image", {"source": photo, "operations": operations, "format": "png"}, OLD)
    insert_sealed("email", {"to": ["ada@example.com"], "template": "welcome", "attachments": [shared]}, OLD)
    recent = insert_sealed("image", {"source": shared, "operations": operations}, datetime.now(UTC))
    photo_file, shared_file = file_of(client, photo), file_of(client, shared)

    env = {**env_of(service_env, settings), "CONVEYOR_ENCRYPTION_KEYS": keys}
    try:
        pruned = run_cli("prune", "--older-than", "300d", "--yes", env=env)
    finally:  # the session's other tests read every row without this key
        with db.engine.begin() as connection:
            connection.execute(
                text("DELETE FROM jobs WHERE queue = 'prune-files' AND id = :id"), {"id": recent}
            )

    assert pruned.returncode == 0, pruned.stderr
    assert not photo_file.exists(), "prune kept the source named by an encrypted payload"
    assert shared_file.exists(), "prune deleted an input that a recent job's encrypted payload names"
