"""`conveyor gdpr export|erase`: one address's records found everywhere, then erased so that a
search of every table finds it nowhere (real PostgreSQL, RabbitMQ, a worker and its outbox)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from jobs.admin.operations import Operations
from jobs.settings import Settings
from jobs.store import Database
from jobs.store.artifacts import ArtifactStore
from jobs.store.partitions import is_partition
from jobs.subjects import spellings
from producers import Client, JobStatus
from tests.helpers import WorkerProcess, run_cli

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Seeded:
    subject: str
    sent: str
    sent_too: str
    cc: str
    waiting: str
    failed: str
    bystander: str
    attachment: str
    brochure: str
    output: str
    named: str
    outbox: Path
    artifacts: Path


@pytest.fixture
def subject() -> str:
    return f"ada.{secrets.token_hex(4)}@example.com"


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "outbox", tmp_path / "artifacts"


@pytest.fixture
def gdpr_settings(settings: Settings, folders: tuple[Path, Path]) -> Settings:
    outbox, artifacts = folders
    return settings.with_overrides(smtp_url=f"file://{outbox}", artifact_url=f"file://{artifacts}")


@pytest.fixture
def gdpr_env(service_env: dict[str, str], gdpr_settings: Settings) -> dict[str, str]:
    return {
        **service_env,
        "CONVEYOR_SMTP_URL": gdpr_settings.smtp_url,
        "CONVEYOR_ARTIFACT_URL": gdpr_settings.artifact_url,
    }


def insert_failed_job(db: Database, subject: str) -> str:
    """A job whose only mention of the subject is in its attempt's error and traceback."""
    job_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (id, kind, queue, status, payload, attempts, created_at, finished_at, "
                "error) VALUES (:id, 'noop', 'elsewhere.default', 'failed', '{}', 1, :now, :now, 'refused')"
            ),
            {"id": job_id, "now": now},
        )
        connection.execute(
            text(
                "INSERT INTO job_attempts (job_id, attempt, worker, host, pid, started_at, finished_at, "
                "outcome, error, traceback) VALUES (:id, 1, 'w', 'h', 1, :now, :now, 'failed', :error, :tb)"
            ),
            {
                "id": job_id,
                "now": now,
                "error": f"SMTPRecipientsRefused: {{'{subject.upper()}': (550, 'no such user')}}",
                "tb": f'Traceback (most recent call last):\n  send(to="{subject}")\nSMTPRecipientsRefused',
            },
        )
    return job_id


@pytest.fixture
def seeded(
    gdpr_settings: Settings,
    gdpr_env: dict[str, str],
    db: Database,
    subject: str,
    folders: tuple[Path, Path],
    start_worker: WorkerProcess.Factory,
) -> Iterator[Seeded]:
    """Sent emails (outbox copies, deliveries), a held one, a failed job, artifacts of all sorts,
    and a bystander whose address contains the subject's."""
    with Client(gdpr_settings, db=db) as client:
        attachment = client.put_artifact(b"%PDF-1.4 invoice", name="invoice.pdf")
        sent = client.send_email(
            f'"Ada Lovelace" <{subject.upper()}>', "welcome", {"name": "Ada"}, attachments=[attachment]
        )
        cc = client.send_email("grace@example.com", "welcome", {"name": "Grace"}, cc=[subject])
        brochure = client.put_artifact(b"%PDF-1.4 brochure", name="brochure.pdf")  # attached for all
        sent_too = client.send_email(subject, "welcome", {"name": "Ada"}, attachments=[brochure])
        bystander = client.send_email(f"b{subject}", "welcome", {"name": "Bada"}, attachments=[brochure])
        worker = start_worker("--processes", "1", "--threads", "2", env=gdpr_env)
        for job in (sent, cc, sent_too, bystander):
            job.wait(timeout=30)
        worker.terminate()
        waiting = client.send_email(
            subject, "password_reset", {"name": "Ada", "reset_url": "https://x/r"}, delay=3600
        )
        output = ArtifactStore(db, gdpr_settings.artifact_url).put(
            b"receipt", name="receipt.txt", job_id=sent.id
        )
        named = client.put_artifact(b"notes", name=f"notes on {subject}.txt")
    outbox, artifacts = folders
    return Seeded(
        subject=subject,
        sent=sent.id,
        sent_too=sent_too.id,
        cc=cc.id,
        waiting=waiting.id,
        failed=insert_failed_job(db, subject),
        bystander=bystander.id,
        attachment=attachment,
        brochure=brochure,
        output=output.id,
        named=named,
        outbox=outbox,
        artifacts=artifacts,
    )


def cli_json(env: dict[str, str], *args: str) -> Any:
    result = run_cli(*args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def tables(db: Database) -> dict[str, list[str]]:
    """Every table of the schema, with its ``bytea`` columns (the partitions of ``jobs`` are searched
    through ``jobs``)."""
    with db.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT t.tablename, c.column_name FROM pg_tables t LEFT JOIN information_schema.columns c "
                "ON c.table_name = t.tablename AND c.table_schema = 'public' AND c.data_type = 'bytea' "
                "WHERE t.schemaname = 'public'"
            )
        )
        found: dict[str, list[str]] = {}
        for table, column in rows:
            if is_partition(table):
                continue
            found.setdefault(table, []).extend([column] if column else [])
        return found


def row_counts(db: Database) -> dict[str, int]:
    with db.engine.connect() as connection:
        return {t: connection.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in tables(db)}


def mentions(db: Database, subject: str) -> list[str]:
    """The tables with a row that still names ``subject`` in any spelling, searched in the whole
    row's text and in every ``bytea`` column decoded (not as the tail of a longer address: the
    bystander ``bada…`` stays). The search runs in PostgreSQL: the test database is large."""
    forms = "|".join(re.escape(form.lower()) for form in spellings(subject))
    pattern = rf"(^|[^a-z0-9._%+-])({forms})($|[^a-z0-9-])"
    found = []
    with db.engine.connect() as connection:
        for table, binary in tables(db).items():
            decoded = "".join(f" || ' ' || coalesce(encode(t.\"{c}\", 'escape'), '')" for c in binary)
            hit = connection.execute(
                text(f'SELECT EXISTS (SELECT 1 FROM "{table}" t WHERE lower(t::text{decoded}) ~ :pattern)'),
                {"pattern": pattern},
            ).scalar_one()
            if hit:
                found.append(table)
    return sorted(found)


def audit_rows(db: Database, namespace: str, action: str) -> list[dict[str, Any]]:
    with db.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT row_to_json(a) FROM audit_log a WHERE namespace = :ns AND action = :action"),
            {"ns": namespace, "action": action},
        )
        return [row[0] for row in rows]


def installation_hash(db: Database, subject: str) -> str:
    with db.engine.connect() as connection:
        secret = connection.execute(text("SELECT secret FROM installation")).scalar_one()
    return hmac.new(bytes(secret), subject.lower().encode(), hashlib.sha256).hexdigest()


def test_export_finds_the_subject_in_jobs_attempts_deliveries_artifacts_and_the_outbox(
    seeded: Seeded, gdpr_env: dict[str, str], db: Database, settings: Settings
) -> None:
    exported = cli_json(gdpr_env, "gdpr", "export", "--subject", f"Ada <{seeded.subject.upper()}>")

    assert exported["lookup"] == "text"
    jobs = {job["id"]: job for job in exported["jobs"]}
    # Not the bystander, whose address ends with the subject's.
    assert set(jobs) == {seeded.sent, seeded.sent_too, seeded.cc, seeded.waiting, seeded.failed}
    assert "SMTPRecipientsRefused" in jobs[seeded.failed]["attempts"][0]["error"]
    assert jobs[seeded.waiting]["payload"]["context"]["reset_url"] == "https://x/r"
    assert {d["job_id"] for d in exported["deliveries"]} == {seeded.sent, seeded.sent_too, seeded.cc}
    # The brochure is attached to the bystander's email too: it is not the subject's.
    assert {a["id"] for a in exported["artifacts"]} == {seeded.attachment, seeded.output, seeded.named}
    assert sorted(Path(p).name for p in exported["outbox_files"]) == sorted(
        [f"{seeded.sent}.eml", f"{seeded.sent_too}.eml", f"{seeded.cc}.eml"]
    )
    assert exported["counts"]["jobs"] == 5
    (row,) = audit_rows(db, settings.namespace, "gdpr.export")
    assert row["details"]["subject_hash"] == exported["subject_hash"] == installation_hash(db, seeded.subject)
    assert seeded.subject not in json.dumps(row).lower()
    table = run_cli("gdpr", "export", "--subject", seeded.subject, env=gdpr_env)
    assert table.returncode == 0
    assert seeded.failed in table.stdout


def test_erase_leaves_the_address_nowhere_in_the_database_nor_in_files(
    seeded: Seeded, gdpr_env: dict[str, str], db: Database, settings: Settings
) -> None:
    assert mentions(db, seeded.subject) == [
        "artifacts",
        "delayed_messages",
        "email_deliveries",
        "job_attempts",
        "jobs",
    ]

    receipt = cli_json(gdpr_env, "gdpr", "erase", "--subject", seeded.subject, "--yes")

    assert receipt["complete"] is True
    assert receipt["counts"] == {
        "jobs_deleted": 4,
        "jobs_redacted": 1,
        "jobs_running": 0,
        "attempts": 4,
        "deliveries": 3,
        "artifacts": 3,
        "artifact_files": 3,
        "delayed_messages": 1,
        "outbox_files": 3,
        "audit_rows_redacted": 0,
    }
    assert mentions(db, seeded.subject) == []
    assert sorted(p.name for p in seeded.outbox.glob("*.eml")) == [f"{seeded.bystander}.eml"]
    assert [p.name for p in seeded.artifacts.iterdir() if not p.name.startswith(".")] == [
        f"{seeded.brochure}-brochure.pdf"
    ]
    with Client(settings, db=db) as client:
        assert client.get(seeded.bystander).status is JobStatus.SUCCEEDED
        redacted = client.get(seeded.waiting)
        assert redacted.status is JobStatus.CANCELLED  # its queued message is skipped, not re-created
        assert redacted.info.payload == {"erased": True}
    (row,) = audit_rows(db, settings.namespace, "gdpr.erase")
    assert row["details"]["subject_hash"] == receipt["subject_hash"] == installation_hash(db, seeded.subject)
    assert row["details"]["receipt"] == receipt["counts"]
    assert row["count"] == 5
    # Erasing again finds nothing and says so.
    again = cli_json(gdpr_env, "gdpr", "erase", "--subject", seeded.subject, "--yes")
    assert set(again["counts"].values()) == {0}


def test_erase_without_yes_shows_what_would_go_and_changes_nothing(
    seeded: Seeded, gdpr_env: dict[str, str], db: Database
) -> None:
    before = row_counts(db), mentions(db, seeded.subject), sorted(seeded.outbox.iterdir())

    result = run_cli("gdpr", "erase", "--subject", seeded.subject, env=gdpr_env)

    assert result.returncode == 1
    assert "would erase: 5 jobs" in result.stderr
    assert (row_counts(db), mentions(db, seeded.subject), sorted(seeded.outbox.iterdir())) == before


def test_an_address_given_in_another_spelling_finds_the_same_records(
    db: Database, gdpr_env: dict[str, str]
) -> None:
    local = f"user.{secrets.token_hex(3)}"
    job_id = str(uuid.uuid4())
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (id, kind, queue, status, payload, attempts, created_at) "
                "VALUES (:id, 'email', 'elsewhere.email', 'queued', CAST(:payload AS jsonb), 0, now())"
            ),
            {"id": job_id, "payload": json.dumps({"to": [f"{local}@münchen.de"], "template": "welcome"})},
        )

    exported = cli_json(gdpr_env, "gdpr", "export", "--subject", f"{local.upper()}@XN--MNCHEN-3YA.DE")

    assert [job["id"] for job in exported["jobs"]] == [job_id]


def test_a_running_job_is_asked_to_stop_and_the_erasure_says_it_is_incomplete(
    db: Database, gdpr_env: dict[str, str], subject: str
) -> None:
    job_id = str(uuid.uuid4())
    payload = json.dumps({"to": [subject], "template": "welcome", "context": {}})
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (id, kind, queue, status, payload, attempts, created_at, started_at)"
                " VALUES (:id, 'email', 'elsewhere.email', 'running', CAST(:payload AS jsonb), 1, now(),"
                " now())"
            ),
            {"id": job_id, "payload": payload},
        )

    result = run_cli("gdpr", "erase", "--subject", subject, "--yes", "--json", env=gdpr_env)

    assert result.returncode == 1
    receipt = json.loads(result.stdout)
    assert receipt["running"] == [job_id]
    assert receipt["complete"] is False
    assert "run this command again once they have finished" in result.stderr
    with db.engine.connect() as connection:
        status, requested = connection.execute(
            text("SELECT status, cancel_requested_at FROM jobs WHERE id = :id"), {"id": job_id}
        ).one()
    assert status == "running"
    assert requested is not None


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_with_encryption_keys_jobs_are_found_by_keyed_hash_never_by_their_text(
    settings: Settings, db: Database, subject: str
) -> None:
    old, new = f"k0:{key()}", f"k1:{key()}"
    with Client(settings.with_overrides(encryption_keys=old), db=db) as client:
        before_rotation = client.send_email(subject, "welcome", {"name": "Ada"}, delay=3600).id
    rotated = settings.with_overrides(encryption_keys=f"{new},{old}")
    with Client(rotated, db=db) as client:
        after_rotation = client.send_email(
            f"Ada <{subject.upper()}>", "welcome", {"name": "Ada"}, delay=3600
        ).id
    with Client(settings, db=db) as client:  # no keys: no hash, so the keyed lookup cannot see it
        unhashed = client.send_email(subject, "welcome", {"name": "Ada"}, delay=3600).id
    with db.engine.begin() as connection:  # what encryption at rest stores: nothing readable
        connection.execute(
            text('UPDATE jobs SET payload = \'{"sealed": "opaque"}\' WHERE id IN (:a, :b)'),
            {"a": before_rotation, "b": after_rotation},
        )
        connection.execute(
            text("DELETE FROM delayed_messages WHERE message_id IN (:a, :b)"),
            {"a": before_rotation, "b": after_rotation},
        )
    statements: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append(f"{statement} {parameters!r}".lower())

    ops = Operations(rotated, db)
    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        found = ops.subjects.find(subject)
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    receipt = ops.subjects.erase(found, subject)

    assert found.lookup == "hash"
    assert set(found.records.job_ids) == {before_rotation, after_rotation}
    assert statements
    assert not [s for s in statements if subject in s or "ada." in s]
    assert receipt.counts["jobs_redacted"] == 2
    assert {
        i for i in (before_rotation, after_rotation, unhashed) if _payload(db, i) != {"erased": True}
    } == {unhashed}


def _payload(db: Database, job_id: str) -> Any:
    with db.engine.connect() as connection:
        return connection.execute(
            text("SELECT payload FROM jobs WHERE id = :id"), {"id": job_id}
        ).scalar_one()


def test_the_audit_log_keeps_no_address_and_is_redacted_where_an_admin_typed_one(
    db: Database, settings: Settings, subject: str, gdpr_env: dict[str, str]
) -> None:
    # An admin's filter may quote an address: the erasure redacts it from the log too.
    Operations(settings, db).auditor.record("jobs.cancel", selection={"error": f"refused {subject}"}, count=0)

    receipt = cli_json(gdpr_env, "gdpr", "erase", "--subject", subject, "--yes")

    assert receipt["counts"]["audit_rows_redacted"] == 1
    assert mentions(db, subject) == []


def test_a_held_message_that_is_not_utf8_does_not_stop_the_search(
    db: Database, settings: Settings, subject: str
) -> None:
    # A sealed body (encryption at rest) or a foreign one is not UTF-8: converting it to text
    # failed the whole export or erasure ("invalid byte sequence for encoding UTF8: 0x00").
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO delayed_messages (message_id, queue, due_at, body, created_at) "
                "VALUES (:id, 'gdpr-binary', now(), :body, now())"
            ),
            {"id": str(uuid.uuid4()), "body": b"\x00CVE1\xff\xfe binary"},
        )
    with Client(settings, db=db) as client:
        job = client.send_email(subject, "welcome", {"name": "Ada"}, delay=3600).id

    found = Operations(settings, db).subjects.find(subject)

    assert job in found.records.job_ids
