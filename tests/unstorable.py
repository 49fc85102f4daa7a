"""A test-only job kind whose outcome the store cannot hold as it is: a result with a NUL
character, or an error whose message quotes one.

``conveyor worker --include tests.unstorable`` registers it in the worker; a test publishes its
messages raw (the actor ``unstorable``), so the producer side needs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobs.errors import PermanentError
from jobs.kinds import JobKind, register
from jobs.kinds.base import Payload, Result


def _validate(payload: Mapping[str, Any], _settings: object) -> Payload:
    return {"fail": bool(payload.get("fail"))}


def _run(_services: object = None, *, fail: bool = False) -> Result:
    if fail:
        raise PermanentError("the server said: bad\x00byte \ud800")
    return {"text": "nul\x00here"}


KIND = JobKind(
    name="unstorable",
    actor_name="unstorable",
    queue="default",
    max_retries=0,
    min_backoff=0.05,
    max_backoff=0.1,
    validate=_validate,
    run=_run,
)
register(KIND)
