"""`Client.enqueue_many`: one multi-row insert, pipelined confirms, all or nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from jobs.settings import Settings
from jobs.store.models import DelayedMessageRow, JobRow
from producers import Client, JobStatus
from tests.helpers import WorkerProcess, eventually, message_count

pytestmark = [pytest.mark.integration]


def rows_in(client: Client, queue: str) -> int:
    with client.db.session() as session:
        return int(session.scalar(select(func.count()).where(JobRow.queue == queue)) or 0)


def test_enqueue_many_writes_every_row_and_confirms_every_message(
    client: Client, settings: Settings, start_worker: WorkerProcess.Factory
) -> None:
    queue = settings.queue_name("default")
    jobs = client.enqueue_many("noop", [{"sleep": 0}] * 1500, max_retries=1)

    assert len({job.id for job in jobs}) == 1500
    assert all(job.status is JobStatus.QUEUED for job in jobs)
    assert rows_in(client, queue) == 1500
    assert message_count(queue) == 1500

    start_worker("--processes", "1", "--threads", "8")
    eventually(
        lambda: all(i.status == "succeeded" for i in client.jobs.by_ids(j.id for j in jobs)), timeout=60
    )
    assert client.get(jobs[-1].id).info.max_retries == 1


def test_one_bad_payload_sends_nothing_and_names_its_position(client: Client, settings: Settings) -> None:
    queue = settings.queue_name("default")
    with pytest.raises(ValueError, match=r"payload #2: .*sleep"):
        client.enqueue_many("noop", [{}, {"sleep": 1}, {"sleep": "long"}])

    assert rows_in(client, queue) == 0
    assert message_count(queue) == 0


def test_delayed_jobs_of_enqueue_many_wait_in_postgresql(client: Client, settings: Settings) -> None:
    jobs = client.enqueue_many("noop", [{}, {}], delay=600)

    with client.db.session() as session:
        held = set(
            session.scalars(
                select(DelayedMessageRow.message_id).where(
                    DelayedMessageRow.queue == settings.queue_name("default")
                )
            )
        )
    assert held == {job.id for job in jobs}
    assert message_count(settings.queue_name("default")) == 0
