"""Trace context (W3C ``traceparent``): parsed strictly, put in messages by producers, signed,
read by the worker's ``Tracing`` middleware into the attempt's span, row and context."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from opentelemetry import trace

from jobs.context import current_job
from jobs.delivery import DeliveryOptions
from jobs.errors import JobNotFound, SignatureError
from jobs.kinds import KINDS, JobKind, register
from jobs.settings import Settings
from jobs.signing import MessageSigner, SigningKey
from jobs.store.migrate import ensure_database, upgrade
from jobs.tracing import TRACEPARENT_OPTION, TraceParent, outgoing_traceparent, parse_traceparent
from producers import Client
from producers.job import Job
from tests.spans import memory_spans
from workers.runtime import WorkerStack, build_worker_stack

HEADER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
_spans = memory_spans


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "bogus",
        HEADER.upper(),  # upper-case hex
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff
        HEADER + "-extra",  # version 00 has four fields exactly
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01extra",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # a digit short
        42,
    ],
)
def test_a_malformed_traceparent_is_refused(value: object) -> None:
    assert parse_traceparent(value) is None


def test_a_valid_traceparent_is_parsed_and_a_later_version_may_carry_more_fields() -> None:
    parsed = parse_traceparent(HEADER)

    assert parsed == TraceParent("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 1)
    assert parsed.sampled
    assert parsed.header == HEADER
    later = parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more")
    assert later is not None
    assert not later.sampled
    assert later.header.startswith("00-4bf92f35")


def test_an_explicit_traceparent_wins_and_a_malformed_one_is_dropped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracer = trace.get_tracer("test")
    _spans()
    with tracer.start_as_current_span("request") as span:
        current = span.get_span_context()
        assert outgoing_traceparent(HEADER) == HEADER
        with caplog.at_level(logging.WARNING, logger="conveyor.tracing"):
            fallback = outgoing_traceparent("00-nonsense")
    assert fallback == f"00-{current.trace_id:032x}-{current.span_id:016x}-{int(current.trace_flags):02x}"
    assert "dropping a malformed traceparent" in caplog.text
    assert outgoing_traceparent(None) is None  # no span current, none given


def test_the_traceparent_is_signed_so_it_cannot_be_changed_in_transit() -> None:
    signer = MessageSigner(SigningKey.of("k" * 32))
    message: dramatiq.Message[object] = dramatiq.Message(
        queue_name="unit.default",
        actor_name="noop",
        args=(),
        kwargs={},
        options={TRACEPARENT_OPTION: HEADER},
    )
    signed = signer.sign(message)
    signer.verify(signed)

    forged_header = HEADER.replace("4bf9", "dead")
    forged = dataclasses.replace(signed, options={**signed.options, TRACEPARENT_OPTION: forged_header})
    with pytest.raises(SignatureError):
        signer.verify(forged)


# ---------------------------------------------------------------- producer to attempt, in memory


def _context_run(_services: object = None) -> dict[str, object]:
    ctx = current_job()
    assert ctx is not None
    return {"trace_id": ctx.trace_id, "span": f"{trace.get_current_span().get_span_context().span_id:016x}"}


CONTEXT_KIND = JobKind(
    name="trace_context",
    actor_name="trace_context_worker",
    queue="default",
    max_retries=0,
    min_backoff=0.01,
    max_backoff=0.02,
    validate=lambda payload, _settings: {},
    run=_context_run,
)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[WorkerStack]:
    register(CONTEXT_KIND)
    settings = Settings(
        broker_url="memory://", database_url=f"sqlite:///{tmp_path}/jobs.db", namespace="unit"
    )
    ensure_database(settings.database_url)
    built = build_worker_stack(settings, threads=2)
    upgrade(built.db)
    worker = dramatiq.Worker(built.broker, worker_threads=2, worker_timeout=50)
    worker.start()
    yield built
    worker.stop()
    built.close()
    KINDS.pop(CONTEXT_KIND.name, None)


@pytest.fixture
def client(stack: WorkerStack) -> Iterator[Client]:
    with Client(stack.settings, broker=stack.broker) as c:
        yield c


def test_an_attempt_runs_in_a_child_span_of_the_producers_span_and_keeps_its_trace_id(client: Client) -> None:
    exporter = _spans()
    with trace.get_tracer("test").start_as_current_span("request") as request:
        job = client.enqueue("trace_context")
    producer = request.get_span_context()

    result = job.wait(timeout=30)

    (run,) = [s for s in exporter.get_finished_spans() if s.name == "trace_context run"]
    assert run.context is not None
    assert run.parent is not None
    assert run.context.trace_id == producer.trace_id
    assert run.parent.span_id == producer.span_id
    assert run.kind is trace.SpanKind.CONSUMER
    assert run.attributes is not None
    assert run.attributes["conveyor.job.id"] == job.id
    # The job's code sees the trace, and its own spans would be children of the attempt's.
    assert result == {"trace_id": f"{producer.trace_id:032x}", "span": f"{run.context.span_id:016x}"}
    assert [a.trace_id for a in job.history()] == [f"{producer.trace_id:032x}"]


def test_every_attempt_of_a_retried_job_keeps_the_trace(client: Client) -> None:
    job = client.enqueue("noop", fail_attempts=1, min_backoff=0.01, max_backoff=0.02, traceparent=HEADER)

    job.wait(timeout=30)

    assert [(a.outcome, a.trace_id) for a in job.history()] == [
        ("retrying", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("succeeded", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ]


def test_a_job_with_a_malformed_traceparent_on_its_message_runs_outside_any_trace(
    client: Client, stack: WorkerStack, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = _spans()
    message: dramatiq.Message[object] = dramatiq.Message(
        queue_name="unit.default",
        actor_name="trace_context_worker",
        args=(),
        kwargs={},
        options={TRACEPARENT_OPTION: "00-" + "z" * 32},
    )
    with caplog.at_level(logging.WARNING, logger="conveyor.tracing"):
        stack.broker.enqueue(message)
        job = _eventually_finished(client, message.message_id)

    assert job.status.value == "succeeded"
    (run,) = [s for s in exporter.get_finished_spans() if s.name == "trace_context run"]
    assert run.parent is None  # a trace of its own, started by the worker
    assert run.context is not None
    assert [a.trace_id for a in job.history()] == [f"{run.context.trace_id:032x}"]
    assert f"job {message.message_id}: dropping a malformed traceparent" in caplog.text


def _eventually_finished(client: Client, job_id: str) -> Job:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(JobNotFound):
            job = client.get(job_id)
            if job.status.is_final:
                return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_jobs_enqueued_many_at_once_delayed_or_with_an_idempotency_key_carry_the_trace(
    client: Client,
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    many = client.enqueue_many("noop", [{}, {}], traceparent=HEADER)
    delayed = client.enqueue("noop", delay=0.05, traceparent=HEADER)
    keyed = client.enqueue("noop", idempotency_key="traced-once", traceparent=HEADER)
    helper = client.enqueue_with_options("noop", {}, DeliveryOptions(traceparent=HEADER))

    for job in [*many, delayed, keyed, helper]:
        job.wait(timeout=30)
        assert [a.trace_id for a in job.history()] == [trace_id]
