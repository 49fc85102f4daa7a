"""The admin commands on seeded data, checked against RabbitMQ and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from jobs.errors import JobFailed
from jobs.settings import Settings
from jobs.store import Database, JobStore
from producers import Client, JobStatus
from tests.helpers import WorkerProcess, eventually, message_count, run_cli, secret

pytestmark = pytest.mark.integration


def cli_json(env: dict[str, str], *args: str) -> object:
    result = run_cli(*args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def by_queue(rows: object, queue: str) -> dict[str, object]:
    (row,) = [r for r in rows if r["queue"] == queue]  # type: ignore[union-attr,index]
    return row  # type: ignore[no-any-return]


def test_queues_reports_ready_delayed_dead_and_the_oldest_wait(
    client: Client, settings: Settings, service_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    queue = f"{settings.namespace}.default"
    dead = client.enqueue("noop", permanent=True)
    worker = start_worker()
    with pytest.raises(JobFailed):
        dead.wait(timeout=20)
    worker.terminate()
    for _ in range(3):
        client.enqueue("noop")
    client.enqueue("noop", delay=600)

    row = eventually(lambda: (r := by_queue(cli_json(service_env, "queues"), queue))["ready"] == 3 and r)

    assert row["ready"] == message_count(queue) == 3
    # Held in PostgreSQL until due, not in RabbitMQ's .DQ (where a worker would hold it in memory).
    assert row["delayed"] == 1
    assert message_count(f"{queue}.DQ") == 0
    assert row["dead"] == message_count(f"{queue}.XQ") == 1
    assert row["consumers"] == 0
    assert row["oldest_wait_seconds"] > 0
    table = run_cli("queues", env=service_env)
    assert queue in table.stdout
    assert "RabbitMQ" in table.stdout


def test_jobs_list_filters_by_queue_time_and_error_text_and_pages(
    client: Client, service_env: dict[str, str]
) -> None:
    jobs = [client.enqueue("noop") for _ in range(5)]
    ns_queue = client.settings.queue_name("default")

    page1 = cli_json(service_env, "jobs", "list", "--queue", "default", "--since", "5m", "--limit", "3")
    page2 = cli_json(
        service_env, "jobs", "list", "--queue", ns_queue, "--since", "5m", "--limit", "3", "--page", "2"
    )
    future = cli_json(service_env, "jobs", "list", "--queue", "default", "--since", "2999-01-01")
    erroring = cli_json(service_env, "jobs", "list", "--queue", "default", "--error", "nothing like this")

    ids = [r["id"] for r in page1] + [r["id"] for r in page2]  # type: ignore[index,union-attr]
    assert sorted(ids) == sorted(j.id for j in jobs)
    assert len(page1) == 3  # type: ignore[arg-type]
    assert future == []
    assert erroring == []


def test_jobs_show_masks_secrets_and_has_a_timeline(client: Client, service_env: dict[str, str]) -> None:
    job = client.send_email(
        "ada@example.com",
        "welcome",
        {"name": "Ada", "api_token": "tok-123", "link": "https://u:pw@example.com/x"},
    )

    shown = cli_json(service_env, "jobs", "show", job.id)
    table = run_cli("jobs", "show", job.id, env=service_env)

    assert shown["payload"]["context"]["api_token"] == "***"  # type: ignore[index]
    assert shown["payload"]["context"]["link"] == "https://u:***@example.com/x"  # type: ignore[index]
    assert "tok-123" not in table.stdout
    assert "timeline" in table.stdout
    assert "created (queued)" in table.stdout


def test_a_cancelled_delayed_job_never_runs(
    client: Client, service_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    job = client.enqueue("noop", delay=1)

    assert cli_json(service_env, "jobs", "cancel", job.id) == {job.id: "cancelled"}
    start_worker()
    client.enqueue("noop", delay=1.2).wait(timeout=20)  # by now the cancelled one was due too

    assert job.refresh().status is JobStatus.CANCELLED
    assert job.attempts == 0
    assert job.history() == []


def test_a_running_report_stops_at_its_next_step_when_cancelled(
    client: Client, db: Database, service_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    start = datetime(2050, 1, 1, tzinfo=UTC) + timedelta(days=uuid.uuid4().int % 10_000)
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (id, kind, queue, status, payload, attempts, created_at) "
                "SELECT gen_random_uuid(), 'noop', 'bulk', 'succeeded', '{}', 1, "
                "  :start + make_interval(secs => n) "
                "FROM generate_series(1, 400000) AS n"
            ),
            {"start": start},
        )
    start_worker()
    job = client.generate_report(
        "jobs_summary",
        params={"since": start.isoformat(), "until": (start + timedelta(days=6)).isoformat()},
        formats=["csv"],
    )
    eventually(lambda: job.refresh().status is JobStatus.RUNNING)

    assert cli_json(service_env, "jobs", "cancel", job.id) == {job.id: "requested"}

    with pytest.raises(JobFailed, match="cancelled"):
        job.wait(timeout=60)
    assert job.status is JobStatus.CANCELLED
    assert [a.outcome for a in job.history()] == ["cancelled"]


def test_retry_by_filter_touches_exactly_the_matching_jobs(
    client: Client, service_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    permanent = [client.enqueue("noop", permanent=True) for _ in range(2)]
    transient = client.enqueue("noop", fail_attempts=5, max_retries=0)
    for job in [*permanent, transient]:
        with pytest.raises(JobFailed):
            job.wait(timeout=20)

    outcome = cli_json(
        service_env,
        "jobs",
        "retry",
        "--status",
        "failed",
        "--queue",
        "default",
        "--error",
        "fail permanently",
        "--yes",
    )

    assert outcome == {j.id: "retried" for j in permanent}
    for job in permanent:
        eventually(lambda job=job: job.refresh().attempts == 2 and job.status is JobStatus.FAILED)
        assert [a.outcome for a in job.history()] == ["failed", "failed"]
    assert transient.refresh().attempts == 1
    shown = run_cli("jobs", "show", permanent[0].id, env=service_env).stdout
    assert "traceback of attempt 2" in shown
    assert "PermanentError: noop asked to fail permanently" in shown
    waited = run_cli("jobs", "wait", permanent[0].id, "--timeout", "5", env=service_env)
    assert waited.returncode == 1
    assert "PermanentError" in waited.stderr


def test_stats_count_what_finished_per_queue(
    client: Client, settings: Settings, service_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    for job in [client.enqueue("noop") for _ in range(3)] + [
        client.enqueue("noop", fail_attempts=1, min_backoff=0.05)
    ]:
        job.wait(timeout=20)
    failed = client.enqueue("noop", permanent=True)
    with pytest.raises(JobFailed):
        failed.wait(timeout=20)

    data = cli_json(service_env, "stats", "--since", "10m", "--by", "queue")
    (group,) = [g for g in data["groups"] if g["group"] == f"{settings.namespace}.default"]  # type: ignore[index]

    assert (group["done"], group["failed"], group["retried"]) == (4, 1, 1)
    assert group["run"]["p50"] is not None
    assert group["wait"]["p99"] >= group["wait"]["p50"]
    assert run_cli("top", "--once", env=service_env).returncode == 0


def test_prune_deletes_exactly_the_old_finished_jobs(
    client: Client, db: Database, job_store: JobStore, service_env: dict[str, str]
) -> None:
    old, recent = datetime.now(UTC) - timedelta(days=400), datetime.now(UTC)
    ids = {"old_done": str(uuid.uuid4()), "old_queued": str(uuid.uuid4()), "recent_done": str(uuid.uuid4())}
    rows = [
        (ids["old_done"], "succeeded", old, old),
        (ids["old_queued"], "queued", old, None),
        (ids["recent_done"], "succeeded", recent, recent),
    ]
    with db.engine.begin() as connection:
        for job_id, status, created, finished in rows:
            connection.execute(
                text(
                    "INSERT INTO jobs (id, kind, queue, status, payload, attempts, created_at, finished_at) "
                    "VALUES (:id, 'noop', 'prune', :status, '{}', 1, :created, :finished)"
                ),
                {"id": job_id, "status": status, "created": created, "finished": finished},
            )
    artifact = client.artifacts.put(b"output", name="out.txt", job_id=ids["old_done"])

    result = cli_json(service_env, "prune", "--older-than", "300d", "--yes")

    assert result["jobs"] >= 1  # type: ignore[index]
    remaining = {j.id for j in job_store.find(queue="prune", limit=100)}
    assert remaining == {ids["old_queued"], ids["recent_done"]}
    assert client.artifacts.missing([artifact.id]) == [artifact.id]


def test_config_prints_the_effective_settings_with_passwords_masked(service_env: dict[str, str]) -> None:
    password = secret("smtp")
    env = {**service_env, "CONVEYOR_SMTP_URL": f"smtp://mailer:{password}@127.0.0.1:2525"}

    data = cli_json(env, "config")

    assert data["smtp_url"] == "smtp://mailer:***@127.0.0.1:2525"  # type: ignore[index]
    assert data["namespace"] == service_env["CONVEYOR_NAMESPACE"]  # type: ignore[index]
    assert password not in run_cli("config", env=env).stdout


def test_queues_adds_unacknowledged_counts_from_the_management_api(
    client: Client, settings: Settings, service_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    env = {**service_env, "CONVEYOR_RABBITMQ_API_URL": "http://guest:guest@127.0.0.1:15672"}
    queue = f"{settings.namespace}.default"
    start_worker()
    job = client.enqueue("noop", sleep=12)
    eventually(lambda: job.refresh().status is JobStatus.RUNNING)

    # The API refreshes its figures every few seconds: the running job's message is unacked.
    row = eventually(
        lambda: (r := by_queue(cli_json(env, "queues"), queue))["unacked"] == 1 and r, timeout=11
    )

    assert row["running"] == 1
    assert row["consumers"] >= 1
    assert "unacked" in run_cli("queues", env=env).stdout
    password = secret("management api")
    down = run_cli("queues", env={**env, "CONVEYOR_RABBITMQ_API_URL": f"http://guest:{password}@127.0.0.1:1"})
    assert down.returncode == 3
    assert "RabbitMQ management API is unreachable" in down.stderr
    assert password not in down.stderr


def test_a_retry_that_cannot_be_published_leaves_the_job_as_it_was(
    client: Client, settings: Settings, start_worker: WorkerProcess.Factory
) -> None:
    from jobs.errors import ServiceUnavailable

    start_worker()
    job = client.enqueue("noop", permanent=True)
    with pytest.raises(JobFailed):
        job.wait(timeout=20)

    offline = Client(settings.with_overrides(broker_url="amqp://guest:guest@127.0.0.1:1/%2F"))
    with offline, pytest.raises(ServiceUnavailable, match="RabbitMQ"):
        offline.retry(job.id)

    assert job.refresh().status is JobStatus.FAILED
    assert "PermanentError" in (job.error or "")
