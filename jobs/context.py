"""The running job's context, visible to the job's code in the worker thread that runs it."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs.errors import JobCancelled

#: Seconds between two progress writes of one job (100 % is always written).
PROGRESS_EVERY = 0.5


@dataclass
class JobContext:
    """What a job may know about its own run: set per attempt by the job middleware (``InFlightJobs``)."""

    job_id: str
    kind: str
    attempt: int
    #: The W3C trace id (32 hex digits) the attempt runs under, when its message carried one.
    trace_id: str | None = None
    #: The job's return value, handed to the recording middleware (see ``jobs.actors``).
    result: dict[str, Any] | None = field(default=None, repr=False)
    #: Asks the store whether an admin cancelled this running job.
    cancel_check: Callable[[], bool] | None = field(default=None, repr=False)
    #: Writes the job's progress (0–100) to its row.
    progress_sink: Callable[[int], None] | None = field(default=None, repr=False)
    #: Set when the job stopped because it was cancelled.
    cancelled: bool = False
    _last_check: float = field(default=0.0, repr=False)
    _progress: int = field(default=-1, repr=False)
    _progress_at: float = field(default=0.0, repr=False)

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

    def report_progress(self, percent: float) -> None:
        """Record how far the job is, from 0 to 100 (clamped, rounded down).

        A value is written only when it changed, and at most once every :data:`PROGRESS_EVERY`
        seconds (100 always), so a loop may call this on every item. It is also a cooperative
        stop point, like :meth:`raise_if_cancelled`.

        Raises:
            ValueError: ``percent`` is not a finite number.
            JobCancelled: an admin cancelled this job while it ran.
        """
        if isinstance(percent, bool) or not isinstance(percent, int | float) or not math.isfinite(percent):
            raise ValueError(f"progress must be a finite number from 0 to 100, not {percent!r}")
        self.raise_if_cancelled()
        value = max(0, min(100, int(percent)))
        now = time.monotonic()
        if self.progress_sink is None or value == self._progress:
            return
        if value < 100 and now - self._progress_at < PROGRESS_EVERY:
            return
        self.progress_sink(value)
        self._progress, self._progress_at = value, now


def report_progress(percent: float) -> None:
    """Record the current job's progress, 0–100 (see :meth:`JobContext.report_progress`);
    does nothing outside a job."""
    ctx = current_job()
    if ctx is not None:
        ctx.report_progress(percent)


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
