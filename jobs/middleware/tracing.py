"""Tracing middleware: each attempt of a job runs in the trace its producer started.

Before the attempt's start is written, it reads the message's ``traceparent`` option
(``jobs/tracing.py``; a malformed one is dropped with a warning). With the OpenTelemetry API
installed, it starts the attempt's span (a consumer span named after the kind) as a child of
that context, or as a new trace when there is none, and makes it current in the worker thread
while the job runs: the job's own spans, and the jobs it enqueues, join the trace. The trace id
(the span's, else the header's) goes on the message for ``Recording``, which writes it with the
attempt's start (``job_attempts.trace_id``), and on the job's log lines.

Placed before the lifecycle's middleware: its ``after_*`` hooks run after theirs, so the span
covers the attempt up to the hand-over of its end. Without an OpenTelemetry SDK configured,
spans cost next to nothing (the API's no-op tracer); without the API, no span is made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import dramatiq
from dramatiq.common import q_name
from dramatiq.middleware import Middleware

from jobs.kinds import ACTOR_KINDS, JobKind
from jobs.middleware.state import attempt_of
from jobs.tracing import (
    TRACEPARENT_OPTION,
    checked_traceparent,
    opentelemetry_context,
    opentelemetry_trace,
    parent_context,
    set_trace_id,
)

logger = logging.getLogger("conveyor.tracing")

#: Milliseconds a stopping worker process waits for its last spans to be exported.
FLUSH_TIMEOUT_MS = 5000
#: The attribute of a delivered message that holds its open span and the context token.
_SPAN = "conveyor_span"


class Tracing(Middleware):
    """Starts each attempt's span under the message's trace context; records its trace id."""

    def __init__(self, *, kinds: Mapping[str, JobKind] = ACTOR_KINDS) -> None:
        self.kinds = kinds
        self._tracer: Any = None
        # While no SDK is configured, whether one is is asked again at most once a second.
        self._no_sdk_until = 0.0

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        kind = self.kinds.get(message.actor_name)
        if kind is None:  # an actor of the application's own: not a Conveyor job
            return
        parent = checked_traceparent(message.options.get(TRACEPARENT_OPTION), job_id=message.message_id)
        trace_id = parent.trace_id if parent is not None else None
        try:
            span_trace_id = self._start_span(message, kind, parent)
        except Exception:  # tracing never fails a job
            logger.warning("job %s: could not start its span", message.message_id, exc_info=True)
            span_trace_id = None
        set_trace_id(message, span_trace_id or trace_id)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._end_span(message, exception=exception)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self._end_span(message, skipped=True)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # A worker process ends with os._exit (no atexit hook runs): spans a batching processor
        # still holds are exported now, or they would be lost with the process.
        trace = opentelemetry_trace()
        flush = getattr(trace.get_tracer_provider(), "force_flush", None) if trace is not None else None
        if flush is None:
            return
        try:
            flush(FLUSH_TIMEOUT_MS)
        except Exception:  # tracing never fails a worker's stop
            logger.warning("could not export the last spans", exc_info=True)

    def _start_span(self, message: dramatiq.MessageProxy, kind: JobKind, parent: Any) -> str | None:
        """Start and enter the attempt's span; its trace id (None: OpenTelemetry absent, or no
        SDK recording and no parent)."""
        trace, otel_context = opentelemetry_trace(), opentelemetry_context()
        if trace is None or otel_context is None:
            return None
        if self._tracer is None and not self._sdk_configured(trace):
            # No span could be recorded. The remote parent alone is made current, so that jobs
            # enqueued from this one still carry the producer's trace.
            if parent is not None:
                setattr(message, _SPAN, (None, otel_context.attach(parent_context(parent))))
            return None
        parent_ctx = parent_context(parent)
        span = self._tracer.start_span(
            f"{kind.name} run",
            context=parent_ctx,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "conveyor.job.id": message.message_id,
                "conveyor.job.kind": kind.name,
                "messaging.system": "rabbitmq",
                "messaging.destination.name": q_name(message.queue_name),
                "messaging.message.id": message.message_id,
            },
        )
        span_context = span.get_span_context()
        # A no-op tracer (no SDK) gives an invalid span: the remote parent stays current instead,
        # so jobs enqueued from this one still carry the producer's trace.
        current = trace.set_span_in_context(span, parent_ctx) if span_context.is_valid else parent_ctx
        token = otel_context.attach(current)
        setattr(message, _SPAN, (span, token))
        return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else None

    def _sdk_configured(self, trace: Any) -> bool:
        """Whether an OpenTelemetry SDK is set up (then the tracer is made, once for good: a
        tracer provider, once set, cannot be replaced)."""
        now = time.monotonic()
        if now < self._no_sdk_until:
            return False
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            self._no_sdk_until = now + 1.0
            return False
        self._tracer = trace.get_tracer("conveyor")
        return True

    def _end_span(
        self, message: dramatiq.MessageProxy, *, exception: BaseException | None = None, skipped: bool = False
    ) -> None:
        opened = getattr(message, _SPAN, None)
        if opened is None:
            return
        setattr(message, _SPAN, None)
        span, token = opened
        try:
            trace, otel_context = opentelemetry_trace(), opentelemetry_context()
            assert trace is not None
            assert otel_context is not None
            if span is None:  # no SDK: only the remote parent was made current
                otel_context.detach(token)
                return
            if skipped:
                span.set_attribute("conveyor.skipped", True)
            if exception is not None:
                span.record_exception(exception)
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(exception).__name__))
            attempt = _attempt_number(message)
            if attempt is not None:
                span.set_attribute("conveyor.job.attempt", attempt)
            span.end()
            otel_context.detach(token)
        except Exception:  # tracing never fails a job
            logger.warning("job %s: could not end its span", message.message_id, exc_info=True)


def _attempt_number(message: dramatiq.MessageProxy) -> int | None:
    attempt = attempt_of(message)
    if attempt is None or attempt.started is None:
        return None
    return attempt.started.number
