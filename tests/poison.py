"""A test-only job kind whose run kills its worker process, as a poison message would.

``conveyor worker --include tests.poison`` registers it in the worker (importing this module
registers it); a test registers ``KIND`` on the producer side for itself alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from jobs.kinds import JobKind, register
from jobs.kinds.base import Payload, Result, require_keys


def _validate(payload: Mapping[str, Any], _settings: object) -> Payload:
    require_keys("crash", payload, set())
    return {}


def _run(_services: object = None) -> Result:
    os._exit(17)


KIND = JobKind(
    name="crash",
    actor_name="crash_worker",
    queue="default",
    max_retries=2,
    min_backoff=0.05,
    max_backoff=0.1,
    validate=_validate,
    run=_run,
)
register(KIND)
