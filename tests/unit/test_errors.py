"""One error tree in jobs.errors, exported from jobs; the CLI alone maps errors to exit codes."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import pytest

import jobs
import jobs.errors
from console.exit_codes import EXIT_FAILURE, EXIT_UNAVAILABLE, EXIT_USAGE, exit_code
from jobs.errors import (
    ConveyorError,
    DeadLetterNotFound,
    JobNotFound,
    JobNotRecorded,
    SchemaMissing,
    ServiceUnavailable,
    SettingsError,
)
from jobs.settings import Settings
from jobs.store import AttemptInfo, JobInfo
from producers import Client, Job


def test_every_error_of_jobs_errors_is_exported_from_jobs() -> None:
    defined = {
        name
        for name, value in vars(jobs.errors).items()
        if inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == "jobs.errors"
    }

    assert defined == set(jobs.__all__)
    assert all(getattr(jobs, name) is getattr(jobs.errors, name) for name in defined)


def test_the_old_import_paths_still_give_the_same_classes() -> None:
    from jobs.admin.dlq import DeadLetterNotFound as FromDlq
    from jobs.context import JobCancelled as FromContext
    from jobs.store.database import SchemaMissing as FromDatabase

    assert (FromDlq, FromContext, FromDatabase) == (DeadLetterNotFound, jobs.JobCancelled, SchemaMissing)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (SettingsError("bad flag"), EXIT_USAGE),
        (ValueError("bad payload"), EXIT_USAGE),
        (ServiceUnavailable("RabbitMQ", "amqp://x", "refused"), EXIT_UNAVAILABLE),
        (JobNotRecorded("id", ServiceUnavailable("PostgreSQL", "pg://x", "gone")), EXIT_UNAVAILABLE),
        (SchemaMissing("pg://x"), EXIT_FAILURE),
        (JobNotFound("no job"), EXIT_FAILURE),
        (DeadLetterNotFound("no letter"), EXIT_FAILURE),
        (ConveyorError("anything"), EXIT_FAILURE),
    ],
)
def test_the_cli_maps_each_error_to_its_exit_code(error: Exception, code: int) -> None:
    assert exit_code(error) == code
    assert not hasattr(error, "exit_code")  # the core knows nothing of exit codes


class Lookup:
    """A JobLookup that is not a client: a Job needs no more."""

    def __init__(self, info: JobInfo) -> None:
        self.info = info

    def get(self, job_id: str) -> JobInfo:
        return self.info

    def attempts(self, job_id: str) -> list[AttemptInfo]:
        return []


def test_a_job_reads_through_any_lookup(tmp_path: Path) -> None:
    fields: dict[str, Any] = dict.fromkeys(JobInfo.__dataclass_fields__)
    fields.update(id="j1", kind="noop", queue="q", status="succeeded", payload={}, attempts=1)
    fields["result"] = {"ok": True}
    job = Job(Lookup(JobInfo(**fields)), JobInfo(**{**fields, "status": "queued", "result": None}))

    assert job.wait(timeout=1) == {"ok": True}
    assert job.history() == []


def test_the_clients_store_is_private_and_its_old_names_warn(tmp_path: Path) -> None:
    settings = Settings(
        broker_url="memory://", database_url=f"sqlite:///{tmp_path}/jobs.db", namespace="unit"
    )
    with Client(settings) as client:
        with pytest.warns(DeprecationWarning, match="Client.db"):
            assert client.db is not None
        with pytest.warns(DeprecationWarning, match="Client.jobs"):
            assert client.jobs is not None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert client.get_many([]) == []
