"""Retention: the scheduler's leader deletes finished jobs past their kind's retention, with their
attempts, artifacts and files, in batches, logged and audited (real PostgreSQL)."""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from jobs.admin.audit import Actor, Auditor
from jobs.admin.operations import Operations
from jobs.admin.retention import Retention
from jobs.schedule.spec import Schedule
from jobs.settings import Settings
from jobs.store import Database
from jobs.store.artifacts import ArtifactStore
from producers import Client
from tests.helpers import ROOT, eventually, run_cli

pytestmark = pytest.mark.integration


def add_job(
    db: Database,
    queue: str,
    kind: str,
    status: str,
    finished_days_ago: float | None,
    created_days_ago: float = 200,
) -> str:
    job_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    finished = None if finished_days_ago is None else now - timedelta(days=finished_days_ago)
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (id, kind, queue, status, payload, attempts, created_at, finished_at) "
                "VALUES (:id, :kind, :queue, :status, '{}', 1, :created, :finished)"
            ),
            {
                "id": job_id,
                "kind": kind,
                "queue": queue,
                "status": status,
                "created": now - timedelta(days=created_days_ago),
                "finished": finished,
            },
        )
        connection.execute(
            text(
                "INSERT INTO job_attempts (job_id, attempt, worker, host, pid, started_at) "
                "VALUES (:id, 1, 'w', 'h', 1, :created)"
            ),
            {"id": job_id, "created": now - timedelta(days=created_days_ago)},
        )
    return job_id


def existing(db: Database, ids: list[str]) -> set[str]:
    with db.engine.connect() as connection:
        rows = connection.execute(text("SELECT id::text FROM jobs WHERE id::text = ANY(:ids)"), {"ids": ids})
        return {row[0] for row in rows}


def audit_rows(db: Database, namespace: str) -> list[dict[str, object]]:
    with db.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT row_to_json(a) FROM audit_log a WHERE namespace = :ns ORDER BY id"),
            {"ns": namespace},
        )
        return [row[0] for row in rows]


def test_the_leader_applies_each_kinds_retention_at_start_with_files_log_and_audit(
    settings: Settings, db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ns = settings.namespace
    policy = settings.with_overrides(
        retention_days=30, retention_days_by_kind=(("email", 7),), artifact_url=f"file://{tmp_path}"
    )
    old_email = add_job(db, f"{ns}.email", "email", "succeeded", 10)
    recent_email = add_job(db, f"{ns}.email", "email", "succeeded", 5)
    old_noop = add_job(db, f"{ns}.default", "noop", "failed", 40)
    recent_noop = add_job(db, f"{ns}.default", "noop", "succeeded", 20)
    old_report = add_job(db, f"{ns}.reports", "report", "cancelled", 40)
    waiting = add_job(db, f"{ns}.default", "noop", "queued", None)
    elsewhere = add_job(db, "another-namespace.email", "email", "succeeded", 100)
    output = ArtifactStore(db, policy.artifact_url).put(b"report", name="report.html", job_id=old_report)
    assert output.location is not None

    with Client(policy, db=db) as client:
        scheduler = Operations(policy, db).scheduler(Schedule("test", ()), client)
        try:
            with caplog.at_level(logging.INFO, logger="conveyor.retention"):
                scheduler.step()
                scheduler.step()  # within the hour: retention does not run again
        finally:
            scheduler.close()

    all_ids = [old_email, recent_email, old_noop, recent_noop, old_report, waiting, elsewhere]
    assert existing(db, all_ids) == {recent_email, recent_noop, waiting, elsewhere}
    assert not Path(output.location.removeprefix("file://")).exists()
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retention:")]
    assert "deleted 3 finished job(s), 1 artifact(s), 1 file(s)" in line
    (row,) = audit_rows(db, ns)
    assert row["action"] == "retention"
    assert row["source"] == "scheduler"
    assert row["actor"] == scheduler.identity
    assert row["count"] == 3
    assert row["selection"] == {"email": "7d", "*": "30d"}


def test_a_large_backlog_is_deleted_in_batches_over_several_rounds(settings: Settings, db: Database) -> None:
    ns = settings.namespace
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (id, kind, queue, status, payload, attempts, created_at, finished_at) "
                "SELECT gen_random_uuid(), 'noop', :queue, 'succeeded', '{}', 1, now() - interval '90 days', "
                "now() - interval '90 days' FROM generate_series(1, 2500)"
            ),
            {"queue": f"{ns}.default"},
        )
    retention = Retention(
        settings.with_overrides(retention_days=30), db, Auditor(db, ns, Actor.scheduler("test"))
    )

    first = retention.run(datetime.now(UTC), max_batches=2)
    second = retention.run(datetime.now(UTC), max_batches=2)

    assert (first.jobs, first.more) == (2000, True)
    assert (second.jobs, second.more) == (500, False)
    assert [row["count"] for row in audit_rows(db, ns)] == [2000, 500]


def test_conveyor_scheduler_runs_retention_alone_without_a_schedule_file(
    settings: Settings, db: Database, service_env: dict[str, str]
) -> None:
    old = add_job(db, f"{settings.namespace}.email", "email", "succeeded", 10)
    kept = add_job(db, f"{settings.namespace}.default", "noop", "succeeded", 10)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "scheduler"],
        env={**service_env, "CONVEYOR_RETENTION_DAYS_EMAIL": "7"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        eventually(lambda: existing(db, [old, kept]) == {kept}, timeout=30)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)

    assert process.returncode == 0, output
    assert "retention: deleted 1 finished job(s)" in output


def test_a_retention_for_an_unknown_kind_stops_the_scheduler_with_a_clear_error(
    service_env: dict[str, str],
) -> None:
    result = run_cli("scheduler", env={**service_env, "CONVEYOR_RETENTION_DAYS_EMAILS": "7"})

    assert result.returncode == 2
    assert "no job kind 'emails'" in result.stderr
    assert "known: email, image, noop, report" in result.stderr
