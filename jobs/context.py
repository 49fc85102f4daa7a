"""The running job's context, visible to the job's code in the worker thread that runs it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class JobContext:
    """What a job may know about its own run: set by the lifecycle middleware per attempt."""

    job_id: str
    kind: str
    attempt: int
    #: The job's return value, handed back to the lifecycle middleware (see ``jobs.actors``).
    result: dict[str, Any] | None = field(default=None, repr=False)


_local = threading.local()


def current_job() -> JobContext | None:
    """The context of the job this thread is running, or ``None`` outside a job."""
    return getattr(_local, "job", None)


def set_current_job(ctx: JobContext | None) -> None:
    _local.job = ctx
