"""A worker-side module for the trace and JSON-log tests (``conveyor worker --include tests.traced``).

Importing it, as ``--include`` does, sets up the OpenTelemetry SDK the way an application would:
a tracer provider whose spans are written, one JSON object per line, to the file named by
``TEST_SPAN_FILE`` (a synchronous processor: each span is on disk when it ends, in whichever
worker process ended it). It also registers the ``chatty`` kind, whose run logs a line of its
own and fails on demand, so that a test sees the job's fields on a line the job's code wrote.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jobs.errors import PermanentError
from jobs.kinds import JobKind, register
from jobs.kinds.base import Payload, Result, require_keys

logger = logging.getLogger("tests.chatty")


class FileSpanExporter(SpanExporter):
    """Appends each finished span to a file as a JSON line (name, ids, parent, attributes)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a", encoding="utf-8") as out:
            for span in spans:
                out.write(json.dumps(span_record(span)) + "\n")
        return SpanExportResult.SUCCESS


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """What a test checks of a span."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
        "parent_span_id": trace.format_span_id(span.parent.span_id) if span.parent else None,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
    }


_MEMORY = InMemorySpanExporter()


def memory_spans() -> InMemorySpanExporter:
    """An in-memory exporter of this process's spans, emptied (a test process's producer side).

    The tracer provider is set once per process (OpenTelemetry keeps the first one it is given),
    shared by every test that looks at spans.
    """
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_MEMORY))
        trace.set_tracer_provider(provider)
    _MEMORY.clear()
    return _MEMORY


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
