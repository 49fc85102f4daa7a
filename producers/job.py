"""A handle on one enqueued job."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Protocol

from jobs.defaults import DEFAULT_WAIT_POLL_MAX, DEFAULT_WAIT_POLL_MIN
from jobs.errors import JobFailed
from jobs.status import JobStatus
from jobs.store import AttemptInfo, JobInfo


class JobLookup(Protocol):
    """Where a :class:`Job` reads its row and attempts again (the job store is one)."""

    def get(self, job_id: str) -> JobInfo:
        """The job's row. Raises ``JobNotFound``."""
        ...

    def attempts(self, job_id: str) -> list[AttemptInfo]:
        """The job's attempts, oldest first."""
        ...


class Job:
    """A job as last read from the store; :meth:`refresh` reads it again."""

    def __init__(self, lookup: JobLookup, info: JobInfo) -> None:
        self._lookup = lookup
        self.info = info

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def status(self) -> JobStatus:
        return JobStatus(self.info.status)

    @property
    def result(self) -> dict[str, Any] | None:
        return self.info.result

    @property
    def error(self) -> str | None:
        return self.info.error

    @property
    def attempts(self) -> int:
        return self.info.attempts

    @property
    def progress(self) -> int | None:
        return self.info.progress

    @property
    def eta(self) -> datetime | None:
        """When a delayed job, or a retry waiting out its backoff, is due."""
        return self.info.eta

    def refresh(self) -> Job:
        """Read the job's row again; returns ``self``."""
        self.info = self._lookup.get(self.id)
        return self

    def history(self) -> list[AttemptInfo]:
        """Every attempt so far, oldest first."""
        return self._lookup.attempts(self.id)

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job is finished and return its result.

        Raises:
            JobFailed: the job ended ``failed`` or ``cancelled``.
            TimeoutError: still unfinished after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = DEFAULT_WAIT_POLL_MIN
        while not self.refresh().status.is_final:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.id} still {self.status.value} after {timeout:g} s")
            remaining = float("inf") if deadline is None else deadline - time.monotonic()
            time.sleep(max(0.0, min(pause, remaining)))
            pause = min(pause * 1.5, DEFAULT_WAIT_POLL_MAX)
        if self.status is not JobStatus.SUCCEEDED:
            raise JobFailed(self.id, self.status.value, self.error)
        return self.result or {}

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.info.kind} {self.info.status}>"
