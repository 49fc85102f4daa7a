"""A worker-side module that only sets up the OpenTelemetry SDK, as an application's would:
a batching span processor (spans leave in batches, from a thread of their own) writing to the
file named by ``TEST_BATCH_SPAN_FILE``. It registers no job kind (``conveyor worker --include
tests.traced_batch`` must import it in the worker processes all the same)."""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.spans import FileSpanExporter

_provider = TracerProvider()
_provider.add_span_processor(BatchSpanProcessor(FileSpanExporter(os.environ["TEST_BATCH_SPAN_FILE"])))
trace.set_tracer_provider(_provider)
