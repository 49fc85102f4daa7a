"""Fuzzing the worker's decode path: random and mutated message bodies and headers,
published to RabbitMQ as any producer could, never crash the worker; each bad message is
dead-lettered (or its job failed) with a reason, and good messages still run.

A real worker stack (RabbitMQ, PostgreSQL, Conveyor's consumer and middleware) runs in this
process, so that a crashed consumer or worker thread is seen directly, not only as a timeout.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import dramatiq
import pika
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as settings_
from hypothesis import strategies as st

# `st.uuids()` imports this module on first draw; imported here, before the test's worker threads
# start, because CPython 3.11.7 can fail to compile a module imported while other threads run
# ("AST constructor recursion depth mismatch", fixed in 3.11.8).
from hypothesis.strategies._internal import random as _hypothesis_random  # noqa: F401

from jobs.errors import JobNotFound
from jobs.settings import Settings
from jobs.store import JobInfo, JobStore
from producers import Client
from tests.helpers import eventually, message_count
from workers.runtime import build_worker_stack

pytestmark = pytest.mark.integration

FIELDS = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp")
ACTORS = ["noop", "send_email", "generate_report", "process_image", "unknown_actor"]

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
        st.sampled_from(["\u0000", "\ud800", "noop", "x" * 300]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)
options = st.dictionaries(
    st.sampled_from(
        [
            "max_retries",
            "retries",
            "eta",
            "min_backoff",
            "max_backoff",
            "max_age",
            "time_limit",
            "throws",
            "pipe_target",
            "on_success",
            "on_failure",
            "broker_priority",
            "other",
        ]
    ),
    json_values,
    max_size=3,
)


@st.composite
def messages(draw: st.DrawFn, queue: str) -> dict[str, Any]:
    """A Dramatiq message, then mutated: fields replaced by any JSON value, dropped or added."""
    message: dict[str, Any] = {
        "queue_name": queue,
        "actor_name": draw(st.sampled_from(ACTORS)),
        "args": draw(st.lists(json_values, max_size=2)),
        "kwargs": _short_sleeps(
            draw(
                st.dictionaries(
                    st.sampled_from(["sleep", "to", "template", "context", "x"]), json_values, max_size=3
                )
            )
        ),
        "options": draw(options),
        "message_id": draw(st.one_of(st.uuids().map(str), st.text(max_size=8))),
        "message_timestamp": draw(st.one_of(st.just(int(time.time() * 1000)), st.integers(-(2**70), 2**70))),
    }
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=2, unique=True)):
        if draw(st.booleans()):
            message[field] = draw(json_values)
        else:
            del message[field]
    if draw(st.booleans()):
        message[draw(st.text(min_size=1, max_size=5))] = draw(json_values)
    return message


def bodies(queue: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=64),
        st.text(max_size=40).map(str.encode),
        json_values.map(lambda v: json.dumps(v).encode()),
        messages(queue).map(lambda m: json.dumps(m).encode()),
        messages(queue).map(lambda m: json.dumps(m).encode()[: len(json.dumps(m)) // 2]),  # cut short
    )


def known_id(**fields: Any) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(fields)))


def known(queue: str, **fields: Any) -> bytes:
    """A message of a shape that would crash an unguarded worker (or run untracked), with
    ``fields`` set."""
    message = {
        "queue_name": queue,
        "actor_name": "noop",
        "args": [],
        "kwargs": {},
        "options": {},
        "message_id": known_id(**fields),
        "message_timestamp": int(time.time() * 1000),
        **fields,
    }
    return json.dumps(message).encode()


headers = st.one_of(
    st.none(),
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.one_of(st.text(max_size=8), st.integers(-(2**31), 2**31 - 1)),
        max_size=3,
    ),
)


def test_random_and_mutated_messages_never_crash_the_worker_and_good_ones_still_run(
    settings: Settings, client: Client, job_store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    queue = settings.queue_name("default")
    stack = build_worker_stack(settings, threads=2)
    worker = dramatiq.Worker(stack.broker, queues=[queue], worker_threads=2)
    worker.start()
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    channel = connection.channel()
    published: list[str] = []

    @settings_(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=bodies(queue), header=headers, message_id=st.one_of(st.none(), st.text(max_size=10)))
    @example(body=known(queue, actor_name=["noop"]), header=None, message_id=None)  # would crash the consumer
    @example(body=known(queue, message_timestamp="soon"), header=None, message_id=None)  # would run untracked
    @example(body=known(queue, options={"retries": "1"}), header=None, message_id=None)  # would crash a hook
    @example(body=known(queue, options={"eta": 10**20}), header=None, message_id=None)  # else held forever
    @example(body=known(queue, kwargs={"sleep": "\u0000"}), header={"x": 1}, message_id="m")  # no row
    @example(body=known(queue, options={"on_success": ["noop"]}), header=None, message_id=None)  # CRITICAL
    @example(body=known(queue, options={"on_failure": "no_such_actor"}), header=None, message_id=None)
    def publish(body: bytes, header: dict[str, Any] | None, message_id: str | None) -> None:
        properties = pika.BasicProperties(delivery_mode=2, headers=header, message_id=message_id)
        channel.basic_publish("", queue, body, properties)
        published.append(body.decode("utf-8", "replace"))

    try:
        with caplog.at_level(logging.WARNING):
            publish()
            good = [client.enqueue("noop", sleep=0) for _ in range(3)]
            for job in good:
                job.wait(timeout=60)
            # Every fuzzed message is settled: acknowledged or dead-lettered, none left unacknowledged.
            eventually(lambda: message_count(queue) == 0, timeout=30)
            assert all(thread.is_alive() for thread in worker.workers)
            assert all(thread.is_alive() for thread in worker.consumers.values())
    finally:
        connection.close()
        worker.stop(timeout=10_000)
        stack.close()

    crashes = [r.getMessage() for r in caplog.records if r.levelno >= logging.CRITICAL]
    assert crashes == [], crashes[:3]
    # No fuzzed job was left waiting or running: each ran to an outcome, or was refused with a reason.
    for info in job_store.find(queue=queue, limit=10_000):
        assert info.status in ("succeeded", "failed", "retrying"), info
    assert message_count(f"{queue}.XQ") > 0
    refused = eventually(lambda: _final(job_store, known_id(kwargs={"sleep": "\u0000"})))
    assert refused.status == "failed"
    assert refused.error == "MessageRefused: payload.sleep: contains a NUL character"


def _final(job_store: JobStore, job_id: str) -> JobInfo | None:
    """The job's row once it is final (its end is written after its message is settled)."""
    try:
        info = job_store.get(job_id)
    except JobNotFound:
        return None
    return info if info.status in ("succeeded", "failed") else None


def _short_sleeps(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A valid ``sleep`` (a number up to 60 s) made short: the fuzzed jobs share two worker
    threads with the good jobs the test waits for, and a few long valid sleeps outlast the wait.
    Invalid values (text, negative, huge) stay as drawn: refusing them is what is tested."""
    sleep = kwargs.get("sleep")
    if isinstance(sleep, int | float) and not isinstance(sleep, bool) and 0 < sleep <= 60:
        return {**kwargs, "sleep": min(sleep, 0.01)}
    return kwargs
