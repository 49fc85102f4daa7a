"""Input the job store cannot hold: refused at enqueue, never run untracked by a worker.

A NUL character, an unpaired surrogate, ``max_retries`` ≥ 2³¹ or an oversized payload: the
producer raises a ``ValueError`` naming the field before anything is sent (rather than a raw
driver error once its message is out), and a worker that gets such a message from another
producer fails the job with the reason and dead-letters the message (rather than losing it as
"already finished").
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import timedelta
from typing import Any

import pika
import pytest

from jobs.errors import JobNotFound
from jobs.kinds import KINDS
from jobs.settings import Settings
from jobs.store import JobInfo, JobStore
from producers import Client
from tests.helpers import WorkerProcess, eventually, message_count

pytestmark = pytest.mark.integration


def publish_raw(settings: Settings, queue: str, body: bytes) -> None:
    """Publish ``body`` as it is to ``queue`` (declared by the worker already), as any producer could."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        connection.channel().basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()


def dramatiq_body(
    queue: str, actor: str, kwargs: dict[str, Any], options: dict[str, Any] | None = None, **fields: Any
) -> tuple[str, bytes]:
    """A message in Dramatiq's JSON wire format (``json.dumps`` escapes NUL and lone surrogates)."""
    message_id = str(uuid.uuid4())
    message = {
        "queue_name": queue,
        "actor_name": actor,
        "args": [],
        "kwargs": kwargs,
        "options": options or {},
        "message_id": message_id,
        "message_timestamp": int(time.time() * 1000),
        **fields,
    }
    return message_id, json.dumps(message).encode()


def rows(job_store: JobStore, settings: Settings) -> list[JobInfo]:
    """This test's job rows (the database is shared by the tests of a session)."""
    queues = {settings.queue_name(kind.queue) for kind in KINDS.values()}
    return [job for queue in sorted(queues) for job in job_store.find(queue=queue, limit=10_000)]


def failed_row(job_store: JobStore, job_id: str) -> JobInfo:
    def failed() -> JobInfo | None:
        try:
            info = job_store.get(job_id)
        except JobNotFound:
            return None
        return info if info.status == "failed" else None

    return eventually(failed, timeout=20)


@pytest.mark.parametrize(
    ("kwargs", "options", "fields", "reason"),
    [
        ({"sleep": 0, "x\x00": 1}, {}, {}, "payload: key 'x\\x00': contains a NUL character"),
        ({"sleep": 0, "x": "\ud800"}, {}, {}, "payload.x: contains an unpaired surrogate (U+D800)"),
        ({"sleep": 0}, {"max_retries": 2**31}, {}, "max_retries option must be between 0 and 2147483647"),
        ({"sleep": 0}, {}, {"message_timestamp": 10**20}, "is not a time the store can hold"),
    ],
    ids=["nul", "surrogate", "max-retries", "timestamp"],
)
def test_a_foreign_message_the_store_cannot_hold_fails_with_the_reason_and_is_dead_lettered(
    settings: Settings,
    job_store: JobStore,
    start_worker: WorkerProcess.Factory,
    kwargs: dict[str, Any],
    options: dict[str, Any],
    fields: dict[str, Any],
    reason: str,
) -> None:
    worker = start_worker()
    queue = f"{settings.namespace}.default"
    job_id, body = dramatiq_body(queue, "noop", kwargs, options, **fields)

    publish_raw(settings, queue, body)

    info = failed_row(job_store, job_id)
    assert info.error is not None
    assert info.error.startswith("MessageRefused: ")
    assert reason in info.error
    assert info.payload == {"conveyor_refused": info.error.removeprefix("MessageRefused: ")}
    (attempt,) = job_store.attempts(job_id)
    assert attempt.outcome == "failed"
    eventually(lambda: message_count(f"{queue}.XQ") == 1)
    assert worker.count("refused without running") == 1
    # The job never ran: the good message after it runs normally, on the same worker.
    good_id, good = dramatiq_body(queue, "noop", {"sleep": 0})
    publish_raw(settings, queue, good)
    eventually(lambda: job_store.get(good_id).status == "succeeded" if _exists(job_store, good_id) else None)


def _exists(job_store: JobStore, job_id: str) -> bool:
    try:
        job_store.get(job_id)
    except JobNotFound:
        return False
    return True


def test_a_foreign_payload_over_the_cap_fails_without_running(
    settings: Settings, job_store: JobStore, start_worker: WorkerProcess.Factory
) -> None:
    start_worker(env={"CONVEYOR_MAX_PAYLOAD_BYTES": "2000"})
    queue = f"{settings.namespace}.email"
    context = {"name": "x" * 5000}
    job_id, body = dramatiq_body(
        queue, "send_email", {"to": "a@example.com", "template": "welcome", "context": context}
    )

    publish_raw(settings, queue, body)

    info = failed_row(job_store, job_id)
    assert "more than CONVEYOR_MAX_PAYLOAD_BYTES=2,000 allows" in (info.error or "")
    assert "xxxx" not in json.dumps(info.payload)  # the oversized payload is not stored
    eventually(lambda: message_count(f"{queue}.XQ") == 1)


def test_a_body_far_over_the_cap_is_dead_lettered_undecoded(
    settings: Settings, job_store: JobStore, start_worker: WorkerProcess.Factory
) -> None:
    worker = start_worker(env={"CONVEYOR_MAX_PAYLOAD_BYTES": "1000"})
    queue = f"{settings.namespace}.default"
    job_id, body = dramatiq_body(queue, "noop", {"sleep": 0, "junk": "x" * 400_000})

    publish_raw(settings, queue, body)

    eventually(lambda: message_count(f"{queue}.XQ") == 1)
    assert eventually(lambda: worker.count("is over the 263,144 bytes"))
    assert not _exists(job_store, job_id)


@pytest.mark.parametrize(
    ("context", "field"),
    [
        ({"name": "Ada\x00"}, "email payload.context.name: contains a NUL character"),
        ({"name": "\udfff"}, "email payload.context.name: contains an unpaired surrogate"),
        ({"a\x00b": "Ada"}, "email payload.context: key 'a\\x00b': contains a NUL character"),
        (
            {"name": "Ada", "deep": {"list": [1, {"x": "\x00"}]}},
            "payload.context.deep.list[1].x: contains a NUL",
        ),
    ],
)
def test_the_client_refuses_what_the_store_cannot_hold_before_sending(
    client: Client, job_store: JobStore, settings: Settings, context: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(field)):
        client.send_email(to="ada@example.com", template="welcome", context=context)

    assert rows(job_store, settings) == []
    assert message_count(f"{settings.namespace}.email") == 0


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"max_retries": 2**31}, "max_retries"),
        ({"max_retries": -1}, "max_retries"),
        ({"priority": 2**40}, "priority"),
        ({"delay": float("inf")}, "delay"),
        ({"delay": float("nan")}, "delay"),
        ({"delay": timedelta.max}, "delay"),
        ({"delay": 10**400}, "delay"),
        ({"min_backoff": float("inf")}, "min_backoff"),
        ({"max_backoff": 1e300}, "max_backoff"),
        ({"idempotency_key": "k\x00"}, "idempotency_key"),
    ],
)
def test_the_client_refuses_options_the_store_or_the_clock_cannot_hold(
    client: Client, job_store: JobStore, settings: Settings, options: dict[str, Any], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        client.enqueue("noop", **options)
    with pytest.raises(ValueError, match=name):
        client.enqueue_many("noop", [{}], **{k: v for k, v in options.items() if k != "idempotency_key"}) if (
            name != "idempotency_key"
        ) else client.enqueue("noop", **options)

    assert rows(job_store, settings) == []
    assert message_count(f"{settings.namespace}.default") == 0


def test_a_payload_over_the_cap_is_refused_at_enqueue(settings: Settings, job_store: JobStore) -> None:
    capped = settings.with_overrides(max_payload_bytes=1000)
    with Client(capped) as client:
        with pytest.raises(ValueError, match=r"email payload: 2,\d{3} bytes of JSON, more than CONVEYOR_MAX"):
            client.send_email(to="ada@example.com", template="welcome", context={"name": "x" * 2000})
        with pytest.raises(ValueError, match=r"payload #1: email payload: .* CONVEYOR_MAX_PAYLOAD_BYTES"):
            client.enqueue_many(
                "email",
                [
                    {"to": "a@example.com", "template": "welcome", "context": {"name": "a"}},
                    {"to": "a@example.com", "template": "welcome", "context": {"name": "x" * 2000}},
                ],
            )
        client.send_email(to="ada@example.com", template="welcome", context={"name": "x" * 500})

    assert len(rows(job_store, settings)) == 1


@pytest.mark.parametrize(
    ("kwargs", "outcome", "error"),
    [
        ({}, "failed", "ResultRefused: result.text: contains a NUL character"),
        ({"fail": True}, "failed", "PermanentError: the server said: bad\\x00byte \\ud800"),
    ],
    ids=["result", "error"],
)
def test_an_outcome_with_text_the_store_refuses_is_still_recorded(
    settings: Settings,
    job_store: JobStore,
    start_worker: WorkerProcess.Factory,
    kwargs: dict[str, Any],
    outcome: str,
    error: str,
) -> None:
    start_worker("--processes", "1", "--threads", "2", "--include", "tests.unstorable")
    queue = f"{settings.namespace}.default"
    job_id, body = dramatiq_body(queue, "unstorable", kwargs)

    publish_raw(settings, queue, body)

    info = failed_row(job_store, job_id)
    assert info.status == outcome
    assert info.error == error
    (attempt,) = job_store.attempts(job_id)
    assert attempt.outcome == "failed"
    eventually(lambda: message_count(f"{queue}.XQ") == 1)
