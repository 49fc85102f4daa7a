"""The dashboard's overview, queues, workers and schedule pages, and pausing a queue, over HTTP
(Starlette's TestClient) against the real PostgreSQL, RabbitMQ and Redis; and a real worker
that stops and starts fetching from a paused queue."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from console.web.app import create_app
from jobs.schedule.spec import load_schedule
from jobs.settings import Settings
from jobs.store import Database
from producers import Client, JobStatus
from tests.helpers import WorkerProcess, consumer_count, eventually, message_count, run_cli

pytestmark = pytest.mark.integration

TOKEN = "web-ops-test-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def web(settings: Settings, db: Database) -> Iterator[TestClient]:
    """The dashboard with actions enabled (a token is set)."""
    app = create_app(dataclasses.replace(settings, web_token=TOKEN), db)
    with TestClient(app) as http:
        yield http


@pytest.fixture
def read_only(settings: Settings, db: Database) -> Iterator[TestClient]:
    with TestClient(create_app(settings, db)) as http:
        yield http


def pauses(db: Database, namespace: str) -> list[str]:
    with db.session() as session:
        rows = session.execute(
            text("SELECT queue FROM queue_pauses WHERE namespace = :ns ORDER BY queue"), {"ns": namespace}
        )
        return [row[0] for row in rows]


def audit_rows(db: Database, namespace: str) -> list[tuple[str, str, str, str]]:
    with db.session() as session:
        rows = session.execute(
            text(
                "SELECT action, source, actor, outcome FROM audit_log WHERE namespace = :ns "
                "AND action LIKE 'queues.%' ORDER BY id"
            ),
            {"ns": namespace},
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def finish_jobs(client: Client, db: Database, succeeded: int, failed: int) -> None:
    """Seed finished jobs (with attempts) from a few minutes ago, as a worker would leave them."""
    # All in one minute bucket, a few minutes ago: ``base`` is ten seconds into a minute.
    base = datetime.now(UTC).replace(second=10, microsecond=0) - timedelta(minutes=3)
    jobs = [client.enqueue("noop") for _ in range(succeeded + failed)]
    with db.session() as session:
        for index, job in enumerate(jobs):
            status = JobStatus.SUCCEEDED.value if index < succeeded else JobStatus.FAILED.value
            started = base + timedelta(seconds=index)
            params = {
                "id": job.id,
                "status": status,
                "started": started,
                "finished": started + timedelta(seconds=2),
            }
            session.execute(
                text(
                    "UPDATE jobs SET status = :status, attempts = 1, started_at = :started, "
                    "finished_at = :finished, created_at = :started - interval '1 second' WHERE id = :id"
                ),
                params,
            )
            session.execute(
                text(
                    "INSERT INTO job_attempts (job_id, attempt, worker, host, pid, started_at, finished_at, "
                    "outcome) VALUES (:id, 1, 'w1', 'host-a', 42, :started, :finished, :status)"
                ),
                params,
            )


def test_the_overview_shows_counters_throughput_and_latency_in_the_html_and_as_json(
    web: TestClient, client: Client, db: Database, settings: Settings
) -> None:
    finish_jobs(client, db, succeeded=4, failed=2)
    client.enqueue("noop")  # queued
    page = web.get("/")
    assert page.status_code == 200
    html = page.text
    assert 'data-counter="queued">1<' in html
    assert 'data-counter="failed_last_hour">2<' in html
    assert "<caption>Jobs finished per bucket (UTC)</caption>" in html
    assert re.search(r"<td class=\"num\">4</td><td class=\"num\">2</td>", html), "the 4 + 2 jobs' bucket row"
    assert "2.000 s" in html  # run p50 in the latency table
    assert 'hx-get="/overview/counters"' in html
    assert "vendor/uPlot.iife.min.js" in html
    data = web.get("/api/overview").json()
    assert {
        "namespace",
        "range",
        "since",
        "until",
        "bucket_seconds",
        "totals",
        "throughput",
        "latency",
        "counters",
    } <= set(data)
    assert data["totals"] == {"finished": 6, "succeeded": 4, "failed": 2, "per_minute": 0.1}
    assert data["range"] == "1h"
    assert data["bucket_seconds"] == 60
    assert len(data["throughput"]) in (60, 61)
    (latency,) = [b for b in data["latency"] if b["jobs"]]
    assert latency["run_p50"] == 2.0
    assert latency["wait_p50"] == 1.0
    assert latency["jobs"] == 6
    counters = data["counters"]
    assert counters["queued"] == 1
    assert counters["running"] == 0
    assert counters["failed_last_hour"] == 2
    assert counters["dead_letters"] == 0
    assert counters["workers_up"] == 0
    assert web.get("/api/overview?range=24h").json()["bucket_seconds"] == 900
    fragment = web.get("/overview/counters")
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<section id="counters"')
    assert web.get("/api/overview/counters").json()["queued"] == 1


def test_an_unknown_range_is_a_bad_request(web: TestClient) -> None:
    assert web.get("/api/overview?range=7y").status_code == 400
    page = web.get("/?range=<b>7y</b>")
    assert page.status_code == 400
    assert "&lt;b&gt;7y&lt;/b&gt;" in page.text
    assert "<b>7y</b>" not in page.text


def test_the_queues_page_has_each_queue_with_the_cli_keys_and_its_state(
    web: TestClient, client: Client, settings: Settings, service_env: dict[str, str]
) -> None:
    for _ in range(3):
        client.enqueue("noop")
    queue = f"{settings.namespace}.default"
    data = web.get("/api/queues").json()
    cli = run_cli("queues", "--json", env=service_env)
    assert cli.returncode == 0, cli.stderr
    cli_rows = json.loads(cli.stdout)
    assert [set(row) for row in data["queues"]] == [set(row) for row in cli_rows]
    (row,) = [r for r in data["queues"] if r["queue"] == queue]
    assert row["ready"] == 3
    assert row["paused"] is False
    html = web.get("/queues").text
    assert f'<tr data-queue="{queue}">' in html
    assert '<span class="badge active">active</span>' in html
    assert 'href="/login"' in html  # a token is set but nobody signed in: no buttons


def test_pause_and_resume_with_the_bearer_token_are_audited(
    web: TestClient, db: Database, settings: Settings
) -> None:
    queue = f"{settings.namespace}.default"
    answer = web.post("/api/queues/default/pause", headers=BEARER)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "queue": queue,
        "paused": True,
        "changed": True,
        "message": answer.json()["message"],
    }
    assert pauses(db, settings.namespace) == [queue]
    again = web.post(f"/api/queues/{queue}/pause", headers=BEARER).json()
    assert again["changed"] is False
    (row,) = [r for r in web.get("/api/queues").json()["queues"] if r["queue"] == queue]
    assert row["paused"] is True
    assert row["paused_by"].startswith("web:api@")
    assert '<span class="badge paused"' in web.get("/queues").text
    assert web.post("/api/queues/default/resume", headers=BEARER).json()["changed"] is True
    assert pauses(db, settings.namespace) == []
    assert audit_rows(db, settings.namespace) == [
        ("queues.pause", "web", "api", "ok"),
        ("queues.pause", "web", "api", "ok"),
        ("queues.resume", "web", "api", "ok"),
    ]


def test_pause_without_the_token_or_with_a_wrong_one_changes_nothing(
    web: TestClient, read_only: TestClient, db: Database, settings: Settings
) -> None:
    assert web.post("/api/queues/default/pause").status_code == 401
    assert web.post("/api/queues/default/pause", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert read_only.post("/api/queues/default/pause", headers=BEARER).status_code == 403
    assert read_only.post("/api/queues/default/pause").status_code == 403
    assert pauses(db, settings.namespace) == []
    assert audit_rows(db, settings.namespace) == []


def test_an_unknown_queue_is_refused_and_audited_as_nothing(
    web: TestClient, db: Database, settings: Settings
) -> None:
    answer = web.post("/api/queues/nosuchqueue/pause", headers=BEARER)
    assert answer.status_code == 400
    assert "unknown queue 'nosuchqueue'" in answer.json()["error"]
    assert pauses(db, settings.namespace) == []
    assert audit_rows(db, settings.namespace) == []


def test_a_signed_in_user_pauses_with_the_form_and_the_audit_log_names_them(
    web: TestClient, db: Database, settings: Settings
) -> None:
    login = web.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', login)
    assert csrf is not None
    signed = web.post(
        "/login", data={"csrf": csrf.group(1), "user": "alice", "token": TOKEN}, follow_redirects=False
    )
    assert signed.status_code == 303
    page = web.get("/queues").text
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token is not None
    assert 'data-action="pause"' in page
    queue = f"{settings.namespace}.default"
    refused = web.post(f"/api/queues/{queue}/pause", data={"csrf": "forged", "next": "/queues"})
    assert refused.status_code == 403
    assert pauses(db, settings.namespace) == []
    done = web.post(
        f"/api/queues/{queue}/pause", data={"csrf": token.group(1), "next": "/queues"}, follow_redirects=False
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/queues"
    after = web.get("/queues").text
    assert "paused: workers stop fetching" in after
    assert 'data-action="resume"' in after
    assert audit_rows(db, settings.namespace) == [("queues.pause", "web", "alice", "ok")]


def test_the_workers_page_lists_live_replicas_and_the_jobs_they_run(
    web: TestClient, client: Client, start_worker: WorkerProcess.Factory, settings: Settings
) -> None:
    start_worker("--processes", "1", "--threads", "2")
    job = client.enqueue("noop", sleep=3)
    eventually(lambda: client.get(job.id).status == JobStatus.RUNNING.value, timeout=20)
    data = eventually(lambda: (d := web.get("/api/workers").json())["running"] and d, timeout=10)
    assert data["source"] == "redis"
    assert len(data["replicas"]) == 1
    assert {"id", "host", "busy", "threads", "last_heartbeat", "queues"} <= set(data["replicas"][0])
    assert [r["job_id"] for r in data["running"]] == [job.id]
    html = web.get("/workers").text
    assert data["replicas"][0]["id"] in html
    assert f'href="/jobs/{job.id}"' in html
    assert web.get("/api/overview/counters").json()["workers_up"] == 1


def test_the_schedule_page_shows_entries_next_runs_and_last_ticks(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    path = tmp_path / "schedule.toml"
    path.write_text('[[job]]\nname = "nightly-noop"\nkind = "noop"\ncron = "0 3 * * *"\n')
    with db.session() as session:
        session.execute(
            text("INSERT INTO schedule_ticks VALUES (:ns, 'nightly-noop', :tick, now())"),
            {"ns": settings.namespace, "tick": datetime(2026, 12, 6, 3, tzinfo=UTC)},
        )
    with TestClient(create_app(settings, db, schedule=load_schedule(path, settings))) as http:
        data = http.get("/api/schedule").json()
        assert set(data) == {"schedule", "namespace", "leader", "entries", "ticks"}
        (entry,) = data["entries"]
        assert entry["name"] == "nightly-noop"
        assert entry["last_tick"] == "2026-12-06T03:00:00Z"
        assert len(entry["next_runs"]) == 3
        assert entry["next_runs"][0].endswith("T03:00:00Z")
        html = http.get("/schedule").text
        assert "nightly-noop" in html
        assert "2026-12-06 03:00:00" in html
        assert "no scheduler is leading" in html
    with TestClient(create_app(settings, db)) as http:
        bare = http.get("/api/schedule").json()
        assert bare["entries"] == []
        assert bare["ticks"] == [{"name": "nightly-noop", "last_tick": "2026-12-06T03:00:00Z"}]
        assert "conveyor web --schedule FILE" in http.get("/schedule").text


def test_web_on_a_public_address_without_a_token_exits_2(service_env: dict[str, str]) -> None:
    result = run_cli("web", "--host", "0.0.0.0", "--port", "0", env=service_env, timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "CONVEYOR_WEB_TOKEN" in result.stderr


def test_a_paused_queue_keeps_its_jobs_in_rabbitmq_until_it_is_resumed(
    web: TestClient,
    client: Client,
    db: Database,
    settings: Settings,
    service_env: dict[str, str],
    start_worker: WorkerProcess.Factory,
) -> None:
    queue = f"{settings.namespace}.default"
    worker = start_worker("--processes", "1", "--threads", "2")
    running = client.enqueue("noop", sleep=6)
    eventually(lambda: client.get(running.id).status == JobStatus.RUNNING.value, timeout=20)
    assert web.post("/api/queues/default/pause", headers=BEARER).status_code == 200
    eventually(lambda: worker.count(f"queue {queue} paused") >= 1, timeout=10)
    running.wait(timeout=20)  # a job running when its queue is paused finishes
    # The consumer leaves its loop at its next idle turn, and lets go of the queue.
    eventually(lambda: consumer_count(queue) == 0, timeout=20)
    jobs = [client.enqueue("noop") for _ in range(3)]
    time.sleep(3)
    assert {client.get(job.id).status for job in jobs} == {JobStatus.QUEUED.value}
    # The three, and the finished job's message: its channel closed before it was acknowledged.
    assert message_count(queue) == 4, "\n".join(worker.lines)
    listed = run_cli("queues", env=service_env)
    assert listed.returncode == 0
    assert "paused" in listed.stdout
    resumed = run_cli("queues", "resume", "default", env=service_env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout
    for job in jobs:
        job.wait(timeout=20)
    eventually(lambda: message_count(queue) == 0, timeout=10)
    assert client.get(running.id).attempts == 1  # its second delivery was skipped, not run
    audited = [row[:2] for row in audit_rows(db, settings.namespace)]
    assert audited == [("queues.pause", "web"), ("queues.resume", "cli")]


def test_a_worker_started_on_a_paused_queue_fetches_nothing_from_it(
    web: TestClient, client: Client, settings: Settings, start_worker: WorkerProcess.Factory
) -> None:
    queue = f"{settings.namespace}.default"
    assert web.post("/api/queues/default/pause", headers=BEARER).status_code == 200
    jobs = [client.enqueue("noop") for _ in range(2)]
    worker = start_worker("--processes", "1", "--threads", "2")
    time.sleep(2.5)
    assert worker.count(f"queue {queue} is paused") >= 1
    assert {client.get(job.id).status for job in jobs} == {JobStatus.QUEUED.value}
    assert message_count(queue) == 2
    assert web.post("/api/queues/default/resume", headers=BEARER).status_code == 200
    for job in jobs:
        job.wait(timeout=20)
