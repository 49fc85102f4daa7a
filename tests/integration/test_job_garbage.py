"""A job that has run leaves nothing for the cyclic garbage collector.

Objects in a reference cycle are freed only by the cyclic collector's full passes, which come
rarely: until then every job's message, attempt and Future stayed in memory, and a worker
process drained a backlog 12 MiB above its idle size (docs/performance/index.md, issue 14).
The worker stack here is the one a worker process builds, on real RabbitMQ and PostgreSQL.
"""

from __future__ import annotations

import gc
import logging
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager

import dramatiq
import pytest

from jobs.context import JobContext
from jobs.middleware.state import Attempt
from jobs.settings import Settings
from jobs.store import JobStore
from producers import Client
from tests.helpers import eventually, message_count
from workers.runtime import build_worker_stack

pytestmark = [pytest.mark.integration]

JOBS = 300
#: What a job's run makes: none of it may be left in a cycle.
PER_JOB = (Future, Attempt, JobContext, dramatiq.MessageProxy, dramatiq.Message)


@contextmanager
def cyclic_collector_off() -> Iterator[None]:
    """Only reference counting frees objects meanwhile: whatever sits in a cycle stays."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def in_cycles(types: tuple[type, ...]) -> Counter[str]:
    """How many objects of ``types`` only the cyclic collector would free, by class name.

    Objects still referenced from outside a cycle are not counted: a job in flight, or a log
    record that keeps an exception's frames (a producer's retry after a transient error)."""
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds unreachable lands in gc.garbage
    try:
        gc.collect()
        return Counter(type(o).__name__ for o in gc.garbage if isinstance(o, types))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_a_drained_backlog_leaves_no_job_in_a_reference_cycle(
    client: Client, job_store: JobStore, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dramatiq")  # its debug records would hold each message
    queue = settings.queue_name("default")
    stack = build_worker_stack(settings, threads=8)
    worker = dramatiq.Worker(stack.broker, queues=[queue], worker_threads=8)
    worker.start()
    try:
        client.enqueue("noop").wait(timeout=30)  # the stack's connections and caches are made
        with cyclic_collector_off():
            jobs = client.enqueue_many("noop", [{} for _ in range(JOBS)])
            ids = [job.id for job in jobs]
            eventually(lambda: all(i.status == "succeeded" for i in job_store.by_ids(ids)), timeout=60)
            eventually(lambda: message_count(queue) == 0, timeout=30)  # every message settled
            left = in_cycles(PER_JOB)
    finally:
        worker.stop(timeout=10_000)
        stack.close()
    # A rare failure path may leave a cycle (an error kept with its traceback); not one a job.
    assert all(count < JOBS // 10 for count in left.values()), f"{JOBS} jobs left in cycles: {dict(left)}"
