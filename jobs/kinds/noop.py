"""The ``noop`` kind: sleeps, optionally fails; serves ``conveyor ping``, ``bench`` and tests."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jobs.context import current_job
from jobs.defaults import NOOP_MAX_SLEEP
from jobs.errors import PermanentError, TransientError
from jobs.kinds.base import JobKind, Payload, Result, as_number, require_keys

if TYPE_CHECKING:
    from jobs.services import Services
    from jobs.settings import Settings

_FIELDS = {"sleep", "fail_attempts", "permanent"}


def validate(payload: Mapping[str, Any], settings: Settings | None = None) -> Payload:
    """``sleep`` (seconds, ≤ 60); ``fail_attempts`` (the first N runs fail and are retried);
    ``permanent`` (fail at once, without retries)."""
    require_keys("noop", payload, _FIELDS)
    clean: Payload = {}
    if "sleep" in payload:
        clean["sleep"] = as_number("noop", "sleep", payload["sleep"], low=0, high=NOOP_MAX_SLEEP)
    if "fail_attempts" in payload:
        count = payload["fail_attempts"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError("noop payload: fail_attempts must be a whole number ≥ 0")
        clean["fail_attempts"] = count
    if "permanent" in payload:
        if not isinstance(payload["permanent"], bool):
            raise ValueError("noop payload: permanent must be true or false")
        clean["permanent"] = payload["permanent"]
    return clean


def run(
    services: Services | None = None, *, sleep: float = 0.0, fail_attempts: int = 0, permanent: bool = False
) -> Result:
    """Sleep, then succeed or fail as asked. Returns the attempt number and the time slept."""
    ctx = current_job()
    attempt = ctx.attempt if ctx else 1
    if sleep:
        time.sleep(min(float(sleep), NOOP_MAX_SLEEP))
    if permanent:
        raise PermanentError("noop asked to fail permanently")
    if attempt <= fail_attempts:
        raise TransientError(f"noop asked to fail attempt {attempt} of the first {fail_attempts}")
    return {"attempt": attempt, "slept": sleep}


KIND = JobKind(
    name="noop",
    actor_name="noop",
    queue="default",
    max_retries=3,
    min_backoff=1.0,
    max_backoff=300.0,
    validate=validate,
    run=run,
    prefetch=32,  # a no-op takes nothing: the window is what keeps the threads busy
)
