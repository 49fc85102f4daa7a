"""The coordinator's own RabbitMQ connection: purge and delete queues, count their consumers."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from base64 import b64encode
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pika
import pika.exceptions


class Rabbit:
    """One blocking connection, reopened when RabbitMQ closes a channel (a queue that is not there)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: pika.BlockingConnection | None = None
        self._channel: pika.adapters.blocking_connection.BlockingChannel | None = None

    def channel(self) -> pika.adapters.blocking_connection.BlockingChannel:
        if self._connection is None or not self._connection.is_open:
            self._connection = pika.BlockingConnection(pika.URLParameters(self.url))
            self._channel = None
        if self._channel is None or not self._channel.is_open:
            self._channel = self._connection.channel()
        return self._channel

    def _do(self, operation: Callable[[Any], Any]) -> Any:
        """Run ``operation(channel)``, once more on a fresh connection if RabbitMQ dropped ours
        (idle past the heartbeat while a long measurement ran)."""
        try:
            return operation(self.channel())
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.ChannelWrongStateError):
            self._connection = self._channel = None
            return operation(self.channel())

    def _declare(self, queue: str) -> Any | None:
        """The passive declare's answer, or None when the queue does not exist."""
        try:
            return self._do(lambda ch: ch.queue_declare(queue, passive=True).method)
        except pika.exceptions.ChannelClosedByBroker:
            return None

    def consumers(self, queue: str) -> int:
        """Consumers on ``queue`` right now (0 when it does not exist)."""
        method = self._declare(queue)
        return int(method.consumer_count) if method else 0

    def depth(self, queue: str) -> int:
        """Ready messages in ``queue`` (0 when it does not exist)."""
        method = self._declare(queue)
        return int(method.message_count) if method else 0

    def purge(self, queues: list[str]) -> None:
        """Drop the ready messages of each queue that exists."""
        for queue in queues:
            with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
                self._do(lambda ch, q=queue: ch.queue_purge(q))

    def delete(self, queues: list[str]) -> None:
        for queue in queues:
            with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
                self._do(lambda ch, q=queue: ch.queue_delete(q))

    def server_version(self) -> str:
        """RabbitMQ's version, from the management API when it answers, else from the AMQP handshake."""
        parts = urlsplit(self.url)
        try:
            request = urllib.request.Request(f"http://{parts.hostname}:15672/api/overview")
            token = b64encode(f"{parts.username or 'guest'}:{parts.password or 'guest'}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
            with urllib.request.urlopen(request, timeout=5) as response:
                return str(json.load(response)["rabbitmq_version"])
        except (OSError, KeyError, ValueError):
            pass
        self.channel()
        assert self._connection is not None
        version = self._connection._impl.server_properties.get("version", b"?")
        return version.decode() if isinstance(version, bytes) else str(version)

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                self._connection.close()
        self._connection = self._channel = None
