"""The frames ``PublishFrames`` marshals are byte for byte those of pika's ``basic_publish``, and
the bodies the publisher encodes those of Dramatiq's ``Message.encode``."""

from __future__ import annotations

import dramatiq
import dramatiq.message
import pika
import pytest
from pika import frame, spec

from producers.frames import SINGLE_FRAME_BODY, PublishFrames
from producers.pipelined import _ACK_FRAME, encode


def pika_frames(channel: int, queue: str, priority: int | None, body: bytes) -> bytes:
    publish = spec.Basic.Publish(exchange="", routing_key=queue, mandatory=True)
    properties = pika.BasicProperties(delivery_mode=2, priority=priority)
    return b"".join(
        (
            frame.Method(channel, publish).marshal(),
            frame.Header(channel, len(body), properties).marshal(),
            frame.Body(channel, body).marshal(),
        )
    )


@pytest.mark.parametrize(
    ("channel", "queue", "priority", "body"),
    [
        (1, "conveyor.default", None, b'{"queue_name":"conveyor.default"}'),
        (7, "ns.email", 5, "ünïcode ✓".encode()),
        (65535, "q" * 255, 0, b"x" * SINGLE_FRAME_BODY),
    ],
)
def test_the_frames_are_pikas(channel: int, queue: str, priority: int | None, body: bytes) -> None:
    frames = PublishFrames(channel)

    first = frames.marshal(queue, priority, body)
    again = frames.marshal(queue, priority, body)  # from the cached parts

    assert first == pika_frames(channel, queue, priority, body)
    assert again == first


def test_a_body_too_large_for_one_frame_or_empty_is_left_to_pika() -> None:
    assert PublishFrames(1).marshal("q", None, b"x" * (SINGLE_FRAME_BODY + 1)) is None
    assert PublishFrames(1).marshal("q", None, b"") is None


def test_cached_parts_do_not_leak_between_queues_and_priorities() -> None:
    frames = PublishFrames(3)
    for queue, priority in [("a", None), ("b", None), ("a", 9), ("b", 1)]:
        assert frames.marshal(queue, priority, b"{}") == pika_frames(3, queue, priority, b"{}")


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"to": ["zoë@example.com"], "context": {"n": 'ü"\n\\', "x": [1, 2.5, None, True]}}],
)
def test_the_publishers_message_bodies_are_dramatiqs_byte_for_byte(kwargs: dict[str, object]) -> None:
    message: dramatiq.Message[object] = dramatiq.Message(
        queue_name="ns.email",
        actor_name="email",
        args=(),
        kwargs=kwargs,
        options={"max_retries": 3, "broker_priority": 2, "traceparent": "00-ab-cd-01"},
    )

    assert encode(message) == message.encode()


def test_another_dramatiq_encoder_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    message: dramatiq.Message[object] = dramatiq.Message(
        queue_name="q", actor_name="a", args=(), kwargs={}, options={}
    )
    monkeypatch.setattr(dramatiq.message, "global_encoder", dramatiq.PickleEncoder())
    monkeypatch.setattr(dramatiq, "get_encoder", lambda: dramatiq.message.global_encoder)

    assert encode(message) == message.encode()
    assert encode(message)[:1] == b"\x80"  # a pickle


@pytest.mark.parametrize(
    ("channel", "tag", "multiple"), [(1, 1, False), (7, 2**40 + 5, True), (65535, 2**64 - 1, False)]
)
def test_a_lone_ack_is_read_as_pika_marshals_it(channel: int, tag: int, multiple: bool) -> None:
    marshaled = frame.Method(channel, spec.Basic.Ack(delivery_tag=tag, multiple=multiple)).marshal()

    assert len(marshaled) == _ACK_FRAME.size
    assert _ACK_FRAME.unpack(marshaled) == (
        spec.FRAME_METHOD,
        channel,
        _ACK_FRAME.size - spec.FRAME_HEADER_SIZE - spec.FRAME_END_SIZE,
        spec.Basic.Ack.INDEX,
        tag,
        int(multiple),
        spec.FRAME_END,
    )
