"""The AMQP frames of a persistent publish, with what repeats marshaled once.

pika marshals a message's three frames (method, content header, body) anew on every
``basic_publish`` and hands them to its transport one by one, which is a large part of what
publishing costs the producer's CPU. For the messages of ``enqueue_many`` the method frame
depends only on the queue and the properties only on the priority, so those are marshaled
once and the three frames go out as one piece.
The bytes are exactly pika's, which ``tests/unit/test_frames.py`` checks.
"""

from __future__ import annotations

import struct

import pika
from pika import frame, spec

#: A body up to this size fits in one body frame whatever frame size the connection negotiated
#: (AMQP's smallest, 4,096 bytes, less the frame's own 8); a larger one goes through pika.
SINGLE_FRAME_BODY = spec.FRAME_MIN_SIZE - spec.FRAME_HEADER_SIZE - spec.FRAME_END_SIZE
_FRAME_END = bytes((spec.FRAME_END,))


class PublishFrames:
    """Marshals ``basic_publish(exchange="", routing_key=queue, mandatory=True)`` of persistent
    messages on one channel."""

    def __init__(self, channel_number: int) -> None:
        self.channel_number = channel_number
        self._methods: dict[str, bytes] = {}
        self._properties: dict[int | None, bytes] = {}

    def marshal(self, queue: str, priority: int | None, body: bytes) -> bytes | None:
        """The three frames of the publish of ``body`` to ``queue``; None for a body too large
        for one frame, or empty (pika then sends no body frame)."""
        if not body or len(body) > SINGLE_FRAME_BODY:
            return None
        method = self._methods.get(queue)
        if method is None:
            publish = spec.Basic.Publish(exchange="", routing_key=queue, mandatory=True)
            method = self._methods[queue] = frame.Method(self.channel_number, publish).marshal()
        properties = self._properties.get(priority)
        if properties is None:
            encoded = pika.BasicProperties(delivery_mode=2, priority=priority).encode()
            properties = self._properties[priority] = b"".join(encoded)
        header = struct.pack(">HxxQ", spec.BasicProperties.INDEX, len(body)) + properties
        return b"".join(
            (
                method,
                struct.pack(">BHI", spec.FRAME_HEADER, self.channel_number, len(header)),
                header,
                _FRAME_END,
                struct.pack(">BHI", spec.FRAME_BODY, self.channel_number, len(body)),
                body,
                _FRAME_END,
            )
        )
