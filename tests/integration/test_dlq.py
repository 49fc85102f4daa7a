"""`conveyor dlq list | requeue | purge` against the real RabbitMQ, PostgreSQL and workers."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import pika
import pytest

from jobs.errors import JobFailed
from jobs.settings import Settings
from producers import Client, Job, JobStatus
from tests.helpers import AMQP_URL, ROOT, WorkerProcess, eventually, message_count, observe, run_cli, secret

pytestmark = pytest.mark.integration


def dlq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("dlq", *args, env=env)


def dead_queue(settings: Settings) -> str:
    return f"{settings.namespace}.default.XQ"


def kill(client: Client, settings: Settings, count: int, **payload: Any) -> list[Job]:
    """Enqueue ``count`` noop jobs that fail for good; wait until their messages are dead-lettered."""
    payload = payload or {"permanent": True}
    jobs = [client.enqueue("noop", **payload) for _ in range(count)]
    for job in jobs:
        with pytest.raises(JobFailed):
            job.wait(timeout=30)
    eventually(lambda: message_count(dead_queue(settings)) == count)
    return jobs


def listed(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    result = dlq(env, "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def publish_raw(queue: str, body: bytes) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        connection.channel().basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()


def test_list_shows_the_dead_jobs_with_their_error_and_removes_nothing(
    client: Client, settings: Settings, service_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    dead = kill(client, settings, 3)
    alive = client.enqueue("noop")
    alive.wait(timeout=20)

    first = listed(service_env)
    second = listed(service_env, "--queue", "default")

    assert sorted(row["id"] for row in first) == sorted(job.id for job in dead)
    assert [row["id"] for row in second] == [row["id"] for row in first], "listing must not reorder"
    for row in first:
        assert row["kind"] == "noop"
        assert row["job_id"] == row["id"]
        assert row["queue"] == f"{settings.namespace}.default"
        assert row["status"] == "failed"
        assert row["attempts"] == 1
        assert row["foreign"] is False
        assert "PermanentError: noop asked to fail permanently" in row["error"]
        assert row["dead_since"]
    assert message_count(dead_queue(settings)) == 3
    table = dlq(service_env, "list")
    assert table.returncode == 0, table.stderr
    assert "3 dead-lettered message(s)" in table.stdout
    assert all(job.id in table.stdout for job in dead)
    assert alive.id not in table.stdout
    assert listed(service_env, "--queue", "email") == []


def test_requeue_runs_a_dead_job_again_and_keeps_its_history(
    client: Client, settings: Settings, service_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    (job,) = kill(client, settings, 1, fail_attempts=1, max_retries=0)
    assert job.attempts == 1

    result = dlq(service_env, "requeue", job.id, "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"count": 1, "ids": [job.id], "skipped": []}
    assert job.wait(timeout=30) == {"attempt": 2, "slept": 0.0}
    assert job.attempts == 2
    assert job.error is None
    history = job.history()
    assert [a.outcome for a in history] == ["failed", "succeeded"]
    assert "TransientError" in (history[0].error or "")
    assert message_count(dead_queue(settings)) == 0
    assert listed(service_env) == []


def test_a_requeued_job_gets_a_fresh_retry_budget_and_dies_again_if_it_keeps_failing(
    client: Client, settings: Settings, service_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    (job,) = kill(client, settings, 1, fail_attempts=10, max_retries=1, min_backoff=0.05, max_backoff=0.1)
    assert job.attempts == 2

    result = dlq(service_env, "requeue", "--all")

    assert result.returncode == 0, result.stderr
    assert "requeued 1 dead letter(s)" in result.stdout
    with pytest.raises(JobFailed):
        job.wait(timeout=30)
    # One run and one retry again (the budget restarted), then back in the dead-letter queue.
    assert [a.outcome for a in job.history()] == ["retrying", "failed", "retrying", "failed"]
    assert eventually(lambda: message_count(dead_queue(settings)) == 1)
    (row,) = listed(service_env)
    assert row["id"] == job.id
    assert row["attempts"] == 4


def test_purge_removes_the_messages_and_the_jobs_stay_failed(
    client: Client, settings: Settings, service_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    dead = kill(client, settings, 2)

    result = dlq(service_env, "purge", "--all", "--yes", "--json")

    assert result.returncode == 0, result.stderr
    assert sorted(json.loads(result.stdout)["ids"]) == sorted(job.id for job in dead)
    assert message_count(dead_queue(settings)) == 0
    for job in dead:
        job.refresh()
        assert job.status is JobStatus.FAILED
        assert "PermanentError" in (job.error or "")
    assert listed(service_env) == []


def test_purge_asks_first_and_a_no_keeps_everything(
    client: Client, settings: Settings, service_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    (job,) = kill(client, settings, 1)

    def purge(answer: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), "dlq", "purge", job.id],
            env=service_env,
            input=answer,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=ROOT,
        )
        observe(result.stdout + result.stderr, "output of `conveyor dlq purge`")
        return result

    refused = purge("n\n")
    assert refused.returncode == 1
    assert "Remove 1 dead-lettered message(s)" in refused.stderr
    assert message_count(dead_queue(settings)) == 1

    accepted = purge("y\n")
    assert accepted.returncode == 0, accepted.stderr
    assert message_count(dead_queue(settings)) == 0
    assert client.get(job.id).status is JobStatus.FAILED


def test_foreign_messages_are_listed_never_requeued_and_can_be_purged(
    client: Client, settings: Settings, service_env: dict[str, str]
) -> None:
    client.enqueue("noop")  # declares the queue and its XQ, as any first enqueue does
    publish_raw(dead_queue(settings), b"not json")
    stranger = {"message_id": str(uuid.uuid4()), "actor_name": "mystery", "queue_name": "x", "options": {}}
    publish_raw(dead_queue(settings), json.dumps(stranger).encode())

    garbage, unknown = listed(service_env)

    assert garbage["kind"] == "?"
    assert garbage["foreign"] is True
    assert garbage["reason"] == "not JSON"
    assert garbage["id"].startswith("sha256:")
    assert unknown["id"] == stranger["message_id"]
    assert unknown["foreign"] is True
    assert "no job row" in unknown["reason"]
    assert "mystery" in unknown["reason"]

    requeued = dlq(service_env, "requeue", "--all", "--json")
    assert requeued.returncode == 0, requeued.stderr
    outcome = json.loads(requeued.stdout)
    assert outcome["count"] == 0
    assert {s["id"] for s in outcome["skipped"]} == {garbage["id"], unknown["id"]}
    assert all("foreign" in s["reason"] for s in outcome["skipped"])
    assert message_count(dead_queue(settings)) == 2

    named = dlq(service_env, "requeue", unknown["id"])
    assert named.returncode == 1
    assert "foreign" in named.stderr

    purged = dlq(service_env, "purge", garbage["id"], unknown["id"], "--yes")
    assert purged.returncode == 0, purged.stderr
    assert message_count(dead_queue(settings)) == 0


def test_unknown_ids_fail_clearly_and_change_nothing(
    client: Client, settings: Settings, service_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    (job,) = kill(client, settings, 1)
    unknown = str(uuid.uuid4())

    for command in (["requeue", job.id, unknown], ["purge", job.id, unknown, "--yes"], ["purge", unknown]):
        result = dlq(service_env, *command)
        assert result.returncode == 1, command
        assert f"no dead-lettered message for {unknown}" in result.stderr
        assert "Traceback" not in result.stderr
    assert message_count(dead_queue(settings)) == 1
    assert client.get(job.id).status is JobStatus.FAILED


def test_bad_usage_exits_2(service_env: dict[str, str]) -> None:
    for command in (["requeue"], ["purge", "--yes"], ["purge", str(uuid.uuid4()), "--all", "--yes"]):
        result = dlq(service_env, *command)
        assert result.returncode == 2, (command, result.stderr)
        assert "give job ids, or --all" in result.stderr
    unknown_queue = dlq(service_env, "list", "--queue", "nope")
    assert unknown_queue.returncode == 2
    assert "unknown queue 'nope'" in unknown_queue.stderr


def test_an_unreachable_broker_gives_one_line_and_exit_3(service_env: dict[str, str]) -> None:
    password = secret("broker")
    env = {**service_env, "CONVEYOR_BROKER_URL": f"amqp://guest:{password}@127.0.0.1:1/%2F"}

    result = dlq(env, "list")

    assert result.returncode == 3
    assert "RabbitMQ is unreachable" in result.stderr
    assert password not in result.stderr
    assert "Traceback" not in result.stderr
