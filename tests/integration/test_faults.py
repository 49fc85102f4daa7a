"""Workers killed or stopped mid-job lose nothing."""

from __future__ import annotations

import os
import signal

import pytest

from jobs.errors import JobFailed
from jobs.settings import Settings
from jobs.store import JobStore
from producers import Client, Job, JobStatus
from tests.helpers import WorkerProcess, eventually, message_count

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _running_pid(job: Job) -> int:
    def attempt_pid() -> int | None:
        open_attempts = [a for a in job.history() if a.finished_at is None]
        return open_attempts[-1].pid if open_attempts else None

    return eventually(attempt_pid)


def test_a_worker_process_killed_mid_job_loses_nothing(
    client: Client, job_store: JobStore, start_worker: WorkerProcess.Factory
) -> None:
    worker = start_worker("--processes", "1", "--threads", "2")
    job = client.enqueue("noop", sleep=2)
    pid = _running_pid(job)

    os.kill(pid, signal.SIGKILL)

    assert job.wait(timeout=40)["attempt"] == 2
    history = job.history()
    assert [a.outcome for a in history] == ["lost", "succeeded"]
    assert history[1].pid != pid
    running = job_store.find(status=JobStatus.RUNNING.value, limit=10_000)
    assert [j.id for j in running if j.queue == client.settings.queue_name("default")] == []
    assert worker.count("died (exit code -9)") == 1


def test_a_message_that_keeps_killing_its_worker_is_dead_lettered(
    client: Client, settings: Settings, start_worker: WorkerProcess.Factory
) -> None:
    start_worker("--processes", "1", "--threads", "2")
    job = client.enqueue("noop", sleep=3, max_retries=0)
    os.kill(_running_pid(job), signal.SIGKILL)

    with pytest.raises(JobFailed, match="WorkerLost"):
        job.wait(timeout=40)

    assert [a.outcome for a in job.history()] == ["lost", "failed"]
    assert eventually(lambda: message_count(f"{settings.namespace}.default.XQ") == 1)


def test_sigterm_lets_in_flight_jobs_finish_then_the_worker_exits(
    client: Client, start_worker: WorkerProcess.Factory
) -> None:
    worker = start_worker("--processes", "2", "--threads", "2")
    jobs = [client.enqueue("noop", sleep=1.5) for _ in range(2)]
    for job in jobs:
        _running_pid(job)

    worker.signal(signal.SIGTERM)

    assert worker.wait(timeout=30) == 0
    for job in jobs:
        assert job.refresh().status is JobStatus.SUCCEEDED
        assert job.attempts == 1
    assert worker.count("stopped") >= 2
