"""Trace context (W3C ``traceparent``) from the producer, through the message, to the attempt.

A producer puts the context of its current OpenTelemetry span, or a ``traceparent`` it was
given, in the message option :data:`TRACEPARENT_OPTION`. It is set once, at enqueue, and never
changes in transit, so the message's signature covers it (``jobs/signing.py``), and retries,
delayed messages and requeued dead letters carry it unchanged. The worker's ``Tracing``
middleware (``jobs/middleware/tracing.py``) starts the attempt's span as its child, and the
attempt's row and log lines keep the trace id.

OpenTelemetry is optional: only its API is used here (``pip install 'conveyor[otel]'``), and
the application configures the SDK. Without it, the header still travels and its trace id is
still recorded; no span is made.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any

logger = logging.getLogger("conveyor.tracing")

#: The message option holding the W3C ``traceparent`` header.
TRACEPARENT_OPTION = "traceparent"

# version-trace_id-parent_id-flags, lowercase hex. Version ff is invalid; a later version may
# append fields after a "-" (W3C Trace Context §3.2.4), version 00 may not.
_TRACEPARENT = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-(?P<flags>[0-9a-f]{2})"
)
_MAX_HEADER = 512


@dataclass(frozen=True)
class TraceParent:
    """A parsed ``traceparent``: the trace, the parent span in it, and the sampled flag."""

    trace_id: str
    span_id: str
    flags: int

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)

    @property
    def header(self) -> str:
        """The value as it travels (version 00)."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"


def parse_traceparent(value: object) -> TraceParent | None:
    """``value`` as a :class:`TraceParent`, or None when it is not a valid W3C ``traceparent``
    (wrong shape, upper-case hex, an all-zero trace or span id, version ``ff``)."""
    if not isinstance(value, str) or len(value) > _MAX_HEADER:
        return None
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, rest = match["version"], value[match.end() :]
    if version == "ff" or (version == "00" and rest) or (rest and not rest.startswith("-")):
        return None
    if set(match["trace"]) == {"0"} or set(match["span"]) == {"0"}:
        return None
    return TraceParent(match["trace"], match["span"], int(match["flags"], 16))


def checked_traceparent(value: object, *, job_id: str | None = None) -> TraceParent | None:
    """:func:`parse_traceparent`, saying in the log when a value given is dropped as malformed
    (a bad header never fails a job: the job runs, outside any trace)."""
    if value is None:
        return None
    parsed = parse_traceparent(value)
    if parsed is None:
        shown = repr(value)[:80]
        logger.warning("%sdropping a malformed traceparent %s", f"job {job_id}: " if job_id else "", shown)
    return parsed


@functools.cache
def opentelemetry_trace() -> ModuleType | None:
    """``opentelemetry.trace``, or None when the OpenTelemetry API is not installed."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


@functools.cache
def opentelemetry_context() -> ModuleType | None:
    """``opentelemetry.context``, or None when the OpenTelemetry API is not installed."""
    try:
        from opentelemetry import context
    except ImportError:
        return None
    return context


def current_traceparent() -> str | None:
    """The ``traceparent`` of the current OpenTelemetry span, or None (no OpenTelemetry, or no
    valid span is current)."""
    trace = opentelemetry_trace()
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    trace_id, span_id = trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)
    return TraceParent(trace_id, span_id, int(context.trace_flags)).header


def outgoing_traceparent(explicit: str | None) -> str | None:
    """What a new message carries: ``explicit`` when it is valid (a malformed one is dropped
    with a warning), else the current span's context (None: the message carries none)."""
    if explicit is not None:
        parsed = checked_traceparent(explicit)
        if parsed is not None:
            return parsed.header
    return current_traceparent()


def parent_context(parent: TraceParent | None) -> Any:
    """An OpenTelemetry ``Context`` whose current span is the remote ``parent`` (the root
    context when there is none). Needs the OpenTelemetry API."""
    trace = opentelemetry_trace()
    assert trace is not None
    from opentelemetry.context import Context

    if parent is None:
        return Context()
    remote = trace.SpanContext(
        trace_id=int(parent.trace_id, 16),
        span_id=int(parent.span_id, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(parent.flags & 0xFF),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(remote), Context())


#: The attribute of a delivered message that holds its attempt's trace id.
_TRACE_ID = "conveyor_trace_id"


def set_trace_id(message: Any, trace_id: str | None) -> None:
    """Record the trace id ``message``'s attempt runs under (set by the ``Tracing`` middleware
    before the attempt's start is written)."""
    setattr(message, _TRACE_ID, trace_id)


def trace_id_of(message: Any) -> str | None:
    """The trace id of ``message``'s attempt, or None (no trace context, no tracing middleware)."""
    value: str | None = getattr(message, _TRACE_ID, None)
    return value
