"""A worker-side module for the trace and JSON-log tests (``conveyor worker --include tests.traced``).

Importing it, as ``--include`` does, sets up the OpenTelemetry SDK the way an application would:
a tracer provider whose spans are written, one JSON object per line, to the file named by
``TEST_SPAN_FILE`` (a synchronous processor: each span is on disk when it ends, in whichever
worker process ended it). It also registers the ``chatty`` kind, whose run logs a line of its
own and fails on demand, so that a test sees the job's fields on a line the job's code wrote.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from jobs.errors import PermanentError
from jobs.kinds import JobKind, register
from jobs.kinds.base import Payload, Result, require_keys
from tests.spans import FileSpanExporter

logger = logging.getLogger("tests.chatty")


def _validate(payload: Mapping[str, Any], _settings: object) -> Payload:
    require_keys("chatty", payload, {"fail"})
    return {"fail": bool(payload.get("fail", False))}


def _run(_services: object = None, *, fail: bool = False) -> Result:
    logger.info("chatty job at work")
    if fail:
        raise PermanentError("chatty asked to fail")
    return {"said": "hello"}


KIND = JobKind(
    name="chatty",
    actor_name="chatty_worker",
    queue="default",
    max_retries=0,
    min_backoff=0.05,
    max_backoff=0.1,
    validate=_validate,
    run=_run,
)
register(KIND)

if os.environ.get("TEST_SPAN_FILE"):
    _provider = TracerProvider()
    _provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(os.environ["TEST_SPAN_FILE"])))
    trace.set_tracer_provider(_provider)
