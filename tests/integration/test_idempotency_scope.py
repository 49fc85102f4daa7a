"""An idempotency key is unique per namespace and kind, not across the whole store."""

from __future__ import annotations

import logging

import pytest

from jobs.settings import Settings
from jobs.store import Database
from producers import Client
from tests.helpers import message_count

pytestmark = pytest.mark.integration


def test_the_same_key_in_another_kind_is_another_job(client: Client, settings: Settings) -> None:
    noop = client.enqueue("noop", idempotency_key="order-7")
    email = client.send_email(
        to="ada@example.com", template="welcome", context={"name": "Ada"}, idempotency_key="order-7"
    )

    assert email.id != noop.id
    assert email.info.kind == "email"
    assert message_count(f"{settings.namespace}.default") == 1
    assert message_count(f"{settings.namespace}.email") == 1


def test_the_same_key_in_another_namespace_is_another_job(
    client: Client, settings: Settings, db: Database
) -> None:
    first = client.enqueue("noop", idempotency_key="nightly")
    other_namespace = settings.with_overrides(namespace=f"{settings.namespace}-b")
    try:
        with Client(other_namespace, db=db) as other:
            second = other.enqueue("noop", idempotency_key="nightly")
            again = other.enqueue("noop", idempotency_key="nightly")
    finally:
        _delete_queues(other_namespace)

    assert second.id != first.id
    assert second.info.queue == f"{other_namespace.namespace}.default"
    assert again.id == second.id


def test_the_same_key_and_kind_with_another_payload_returns_the_first_job_and_says_so(
    client: Client, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    first = client.enqueue("noop", sleep=1, idempotency_key="charge-42")
    with caplog.at_level(logging.WARNING, logger="conveyor.producer"):
        same = client.enqueue("noop", sleep=1, idempotency_key="charge-42")
    assert _warnings(caplog) == []

    with caplog.at_level(logging.WARNING, logger="conveyor.producer"):
        other = client.enqueue("noop", sleep=2, idempotency_key="charge-42")

    assert same.id == first.id == other.id
    assert other.info.payload == {"sleep": 1.0}
    (record,) = _warnings(caplog)
    assert "idempotency key 'charge-42' already names noop job" in record.getMessage()
    assert "another payload" in record.getMessage()
    assert message_count(f"{settings.namespace}.default") == 1


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The producer's warnings (the session logs every logger at DEBUG, for its secret scan)."""
    return [r for r in caplog.records if r.name == "conveyor.producer" and r.levelno >= logging.WARNING]


def _delete_queues(settings: Settings) -> None:
    import pika

    from tests.helpers import queue_names

    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        channel = connection.channel()
        for name in queue_names(settings.namespace):
            channel.queue_delete(name)
    finally:
        connection.close()
