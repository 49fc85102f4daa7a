"""The :class:`JobInfo` an enqueue returns, filled in without the dataclass's ``__init__``, is the
same value, as frozen, as one built the usual way."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from jobs.ids import new_job_id
from jobs.store.jobs import JobInfo, NewJob, _queued_info, _queued_row


def test_a_queued_jobs_info_equals_the_one_its_constructor_builds() -> None:
    job = NewJob(
        id=new_job_id(),
        kind="noop",
        queue="conveyor.default",
        payload={"to": "a@example.com"},
        max_retries=4,
        priority=3,
        idempotency_key="k-1",
        parent_id=new_job_id(),
    )
    now = datetime.now(UTC)
    row = {**_queued_row(job, now), "subjects": ["ab"]}
    info = _queued_info(row)
    built = JobInfo(
        id=job.id,
        kind="noop",
        queue="conveyor.default",
        status="queued",
        payload={"to": "a@example.com"},
        result=None,
        error=None,
        attempts=0,
        max_retries=4,
        priority=3,
        idempotency_key="k-1",
        progress=None,
        eta=None,
        created_at=now,
        started_at=None,
        finished_at=None,
        parent_id=job.parent_id,
    )
    assert info == built
    assert repr(info) == repr(built)
    assert hash(info.id) == hash(built.id)
    assert vars(info) == vars(built)  # no stray key (the row's ``subjects``)
    assert "subjects" in row  # the caller's row is left as it was
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.status = "running"  # type: ignore[misc]
