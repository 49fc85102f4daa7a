"""The running job's context, visible to the job's code in the worker thread that runs it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs.errors import JobCancelled


@dataclass
class JobContext:
    """What a job may know about its own run: set per attempt by the job middleware (``InFlightJobs``)."""

    job_id: str
    kind: str
    attempt: int
    #: The job's return value, handed to the recording middleware (see ``jobs.actors``).
    result: dict[str, Any] | None = field(default=None, repr=False)
    #: Asks the store whether an admin cancelled this running job.
    cancel_check: Callable[[], bool] | None = field(default=None, repr=False)
    #: Set when the job stopped because it was cancelled.
    cancelled: bool = False
    _last_check: float = field(default=0.0, repr=False)

    def raise_if_cancelled(self) -> None:
        """A cooperative stop point for long jobs (checked at most once a second).

        Raises:
            JobCancelled: an admin cancelled this job while it ran.
        """
        now = time.monotonic()
        if self.cancel_check is None or now - self._last_check < 1.0:
            return
        self._last_check = now
        if self.cancel_check():
            raise JobCancelled(f"job {self.job_id} was cancelled while running")


def check_cancelled() -> None:
    """Stop here if the current job was cancelled (no-op outside a job)."""
    ctx = current_job()
    if ctx is not None:
        ctx.raise_if_cancelled()


_local = threading.local()


def current_job() -> JobContext | None:
    """The context of the job this thread is running, or ``None`` outside a job."""
    return getattr(_local, "job", None)


def set_current_job(ctx: JobContext | None) -> None:
    _local.job = ctx
