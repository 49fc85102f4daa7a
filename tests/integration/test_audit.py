"""The audit log: one row per state-changing admin command (CLI, web API), none for reading."""

from __future__ import annotations

import getpass
import json
import socket
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from jobs.admin.audit import Actor
from jobs.admin.operations import Operations
from jobs.settings import Settings
from jobs.store import Database
from producers import Client
from tests.conftest import PG_SERVER
from tests.helpers import run_cli

pytestmark = pytest.mark.integration


def audit_rows(db: Database, namespace: str) -> list[dict[str, object]]:
    with db.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT row_to_json(a) FROM audit_log a WHERE namespace = :ns ORDER BY id"),
            {"ns": namespace},
        )
        return [row[0] for row in rows]


def cli_ok(env: dict[str, str], *args: str) -> str:
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_each_state_changing_command_writes_one_row_naming_who_what_and_which_jobs(
    client: Client, db: Database, settings: Settings, service_env: dict[str, str]
) -> None:
    queued = client.enqueue("noop")
    by_filter = [client.enqueue("noop", sleep=0.01) for _ in range(2)]

    enqueued = json.loads(cli_ok(service_env, "enqueue", "noop", "--json"))["id"]
    cli_ok(service_env, "jobs", "cancel", queued.id)
    cli_ok(service_env, "jobs", "retry", queued.id)
    # Jobs have no namespace column: the queue keeps this test's filter to its own jobs.
    cli_ok(
        service_env, "jobs", "cancel", "--status", "queued", "--queue", "default", "--since", "5m", "--yes"
    )
    cli_ok(service_env, "prune", "--older-than", "30d", "--yes")
    cli_ok(service_env, "dlq", "requeue", "--all")
    cli_ok(service_env, "dlq", "purge", "--all", "--yes")

    rows = audit_rows(db, settings.namespace)
    assert [row["action"] for row in rows] == [
        "enqueue.noop",
        "jobs.cancel",
        "jobs.retry",
        "jobs.cancel",
        "prune",
        "dlq.requeue",
        "dlq.purge",
    ]
    assert {(row["source"], row["actor"], row["host"], row["outcome"]) for row in rows} == {
        ("cli", getpass.getuser(), socket.gethostname(), "ok")
    }
    assert rows[0]["job_ids"] == [enqueued]
    assert rows[1]["job_ids"] == [queued.id]
    assert rows[1]["count"] == 1
    assert rows[2]["job_ids"] == [queued.id]
    assert rows[2]["count"] == 1
    by_selection = rows[3]
    assert by_selection["selection"] == {"status": "queued", "queue": "default", "since": "5m"}
    assert set(by_selection["job_ids"]) == {enqueued, queued.id, *(j.id for j in by_filter)}  # type: ignore[arg-type]
    assert by_selection["count"] == 4
    assert set(rows[4]["selection"]) == {"older_than"}  # type: ignore[arg-type]
    assert rows[5]["selection"] == {"all": True}
    assert rows[5]["count"] == 0
    assert all(row["at"] for row in rows)


def test_read_only_commands_write_nothing(
    client: Client, db: Database, settings: Settings, service_env: dict[str, str], tmp_path: Path
) -> None:
    job = client.enqueue("noop")
    schedule = tmp_path / "schedule.toml"
    schedule.write_text('[[job]]\nname = "tick"\nevery = "1h"\nkind = "noop"\n')
    before = audit_rows(db, settings.namespace)

    for args in (
        ["jobs", "list"],
        ["jobs", "show", job.id],
        ["queues"],
        ["stats"],
        ["config"],
        ["workers"],
        ["dlq", "list"],
        ["artifacts", "list"],
        ["schedule", "list", "--schedule", str(schedule)],
        ["audit"],
        ["gdpr", "--help"],
        ["top", "--once"],
    ):
        cli_ok(service_env, *args)

    assert audit_rows(db, settings.namespace) == before == []


def test_an_action_that_fails_part_way_is_logged_with_its_error(
    db: Database, settings: Settings, service_env: dict[str, str]
) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"

    result = run_cli("jobs", "cancel", unknown, env=service_env)

    assert result.returncode == 1
    (row,) = audit_rows(db, settings.namespace)
    assert row["action"] == "jobs.cancel"
    assert row["outcome"] == "error"
    assert "JobNotFound" in row["details"]["error"]  # type: ignore[index]
    assert row["job_ids"] == [unknown]


def test_audit_lists_rows_newest_first_with_filters(
    db: Database, settings: Settings, service_env: dict[str, str]
) -> None:
    ops = Operations(settings, db, actor=Actor.web("alice", "192.0.2.7"))
    with ops.audit("jobs.retry", job_ids=["a"]) as record:
        record.count = 1
    ops.auditor.record("dlq.purge", count=3, selection={"all": True})
    ops.auditor.record("jobs.cancel", count=0)

    rows = json.loads(cli_ok(service_env, "audit", "--json"))
    jobs_only = json.loads(cli_ok(service_env, "audit", "--action", "jobs", "--limit", "1", "--json"))
    future = json.loads(cli_ok(service_env, "audit", "--since", "2999-01-01", "--json"))
    table = cli_ok(service_env, "audit")

    assert [r["action"] for r in rows] == ["jobs.cancel", "dlq.purge", "jobs.retry"]
    assert {(r["source"], r["actor"], r["host"]) for r in rows} == {("web", "alice", "192.0.2.7")}
    assert [r["action"] for r in jobs_only] == ["jobs.cancel"]
    assert future == []
    assert "alice@192.0.2.7" in table
    assert "dlq.purge" in table


def test_db_upgrade_is_logged_once_it_changed_the_schema(
    service_env: dict[str, str], session_token: str
) -> None:
    url = f"{PG_SERVER}/conveyor_audit_{session_token}"
    env = {**service_env, "CONVEYOR_DATABASE_URL": url}
    try:
        cli_ok(env, "db", "upgrade")
        cli_ok(env, "db", "upgrade")  # already at head: nothing changed, nothing logged
        db = Database(url)
        try:
            rows = audit_rows(db, service_env["CONVEYOR_NAMESPACE"])
        finally:
            db.dispose()
    finally:
        admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "conveyor_audit_{session_token}" WITH (FORCE)'))
        admin.dispose()

    (row,) = rows
    assert row["action"] == "db.upgrade"
    assert row["details"]["created"] is True
    assert row["details"]["from"] is None
