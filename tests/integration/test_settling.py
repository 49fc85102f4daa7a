"""Acks and nacks of one channel go out together: the acks below every delivery still open as
one ``basic_ack`` with ``multiple``, the rest one by one, and each delivery settled as asked."""

from __future__ import annotations

import contextlib
from typing import Any

import dramatiq
import pytest

from jobs.broker import build_broker
from jobs.consumer import ChannelBoundConsumer
from jobs.settings import Settings
from tests.helpers import eventually, message_count, next_message

pytestmark = [pytest.mark.integration]


def _pump(consumer: ChannelBoundConsumer) -> None:
    """Let the connection's thread (this one) run the callbacks the settles scheduled."""
    with contextlib.suppress(StopIteration):
        assert next(consumer) is None


def test_acks_below_every_open_delivery_go_as_one_and_a_nack_among_them_stays_a_nack(
    settings: Settings,
) -> None:
    queue = settings.queue_name("default")
    broker = build_broker(settings)
    for n in range(6):
        broker.enqueue(
            dramatiq.Message(queue_name=queue, actor_name="noop", args=(n,), kwargs={}, options={})
        )
    consumer = broker.consume(queue, prefetch=6, timeout=100)
    assert isinstance(consumer, ChannelBoundConsumer)
    try:
        m = [next_message(consumer) for _ in range(6)]
        assert [message._tag for message in m] == [1, 2, 3, 4, 5, 6]
        sent: list[tuple[int, bool]] = []
        basic_ack = consumer.channel.basic_ack

        def noting(tag: int, multiple: bool = False) -> Any:
            sent.append((tag, multiple))
            return basic_ack(tag, multiple=multiple)

        consumer.channel.basic_ack = noting
        for message, ack in ((m[1], True), (m[0], True), (m[3], False), (m[2], True), (m[5], True)):
            (consumer.ack if ack else consumer.nack)(message)
        _pump(consumer)
        # 1-3 at once (4 is a nack, 5 is still open), then 6 alone.
        assert sent == [(3, True), (6, False)]
        consumer.ack(m[4])
        _pump(consumer)
        assert sent[2:] == [(5, False)]
    finally:
        consumer.close()
        broker.close()
    assert eventually(lambda: message_count(f"{queue}.XQ") == 1 or None)
    assert message_count(queue) == 0
