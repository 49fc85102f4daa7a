"""The RabbitMQ consumer of Conveyor's workers: a message belongs to the channel that delivered it.

When its connection to RabbitMQ drops, Dramatiq starts a new consumer but keeps the messages the
old one had prefetched in the worker's local queue, and its worker threads go on to run them.
RabbitMQ has meanwhile put those messages back in their queue (they were unacknowledged on a
closed channel) and delivers them again: each would run twice. And the stale message's delivery
tag would then be acknowledged on the new channel, where the same number names another message.

So each message here remembers the consumer that delivered it: ``StaleDeliveries``
(``jobs/middleware/stale.py``) skips a message whose channel is gone, and ``ack``/``nack`` drop
a message another consumer delivered.

A message can also carry the pending write of its job's end (``ack_after``): the recorder
(``jobs/middleware/recording.py``) does not make its worker thread wait for that commit, so
the ack or nack is sent when it lands, and not at all if the end could not be stored
(RabbitMQ then delivers it again).
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pika.exceptions
from dramatiq.brokers.rabbitmq import _RabbitmqConsumer
from dramatiq.errors import ConnectionClosed

from jobs import metrics
from jobs.errors import ServiceUnavailable
from jobs.wire import malformed

logger = logging.getLogger("conveyor.consumer")

#: The attribute of a delivered message that holds its consumer.
_DELIVERED_BY = "conveyor_delivered_by"
#: The attribute of a message that holds the pending write of its job's end.
_RECORDED = "conveyor_recorded"
#: The attribute of a message RabbitMQ delivered before (to this consumer or another).
_REDELIVERED = "conveyor_redelivered"
#: Above every delivery tag (RabbitMQ numbers a channel's deliveries from 1, in 64 bits).
_NO_TAG = 1 << 64


class ChannelBoundConsumer(_RabbitmqConsumer):
    """Dramatiq's RabbitMQ consumer, whose messages know which channel they came on.

    It also dead-letters, before any middleware sees it, a body larger than the broker's
    ``max_body_bytes`` (undecoded: a huge message must not cost the worker its memory) and a
    decoded message of a malformed shape (``jobs.wire``), each with a clear line in the log.
    """

    closed = False
    #: Set when its queue is paused (``workers/pauses.py``): it delivers nothing more, so that
    #: Dramatiq's consumer thread sees an idle turn, leaves its loop and closes the channel.
    pausing = False

    def __init__(self, broker: Any, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        #: Delivery tags of the messages RabbitMQ marked as delivered before (until decoded).
        self._redelivered: set[int] = set()
        # Acks and nacks whose ends have landed, sent together on the connection's thread.
        self._settling: list[tuple[int, bool]] = []
        self._settling_lock = threading.Lock()
        self.iterator = self._noting_redeliveries(self.iterator)
        limit = getattr(broker, "max_body_bytes", None)
        if limit is not None:
            self.iterator = self._capped(self.iterator, limit)

    def __next__(self) -> Any:
        if self.pausing:
            return None
        message = super().__next__()  # type: ignore[no-untyped-call]
        if message is None:
            return None
        problem = malformed(message, getattr(self.broker, "actors", None))
        if problem is not None:
            logger.error(
                "message %.64r on %s: dead-lettered without running: %s",
                message.message_id,
                self.queue_name,
                problem,
            )
            self.known_tags.discard(message._tag)
            self._nack(message._tag)
            metrics.dead_lettered(self.queue_name)
            return None
        setattr(message, _DELIVERED_BY, self)
        if message._tag in self._redelivered:
            self._redelivered.discard(message._tag)
            setattr(message, _REDELIVERED, True)
        return message

    def _noting_redeliveries(self, deliveries: Iterator[Any]) -> Iterator[Any]:
        for delivery in deliveries:
            method = delivery[0] if delivery is not None else None
            if method is not None and method.redelivered:
                self._redelivered.add(method.delivery_tag)
            yield delivery

    def _capped(self, deliveries: Iterator[Any], limit: int) -> Iterator[Any]:
        """``deliveries`` without the bodies over ``limit`` bytes: those are dead-lettered undecoded."""
        for delivery in deliveries:
            method, properties, body = delivery
            if method is not None and body is not None and len(body) > limit:
                logger.error(
                    "message %s on %s: dead-lettered without running: its body of %s bytes is over "
                    "the %s bytes CONVEYOR_MAX_PAYLOAD_BYTES allows a message",
                    getattr(properties, "message_id", None) or f"#{method.delivery_tag}",
                    self.queue_name,
                    f"{len(body):,}",
                    f"{limit:,}",
                )
                self._nack(method.delivery_tag)
                metrics.dead_lettered(self.queue_name)
                yield None, None, None
                continue
            yield delivery

    @property
    def is_open(self) -> bool:
        """Whether this consumer's channel can still acknowledge what it delivered."""
        return not self.closed and bool(self.connection.is_open and self.channel.is_open)

    def ack(self, message: Any) -> None:
        if self._delivered_here(message, "ack"):
            self._once_recorded(message, nack=False)

    def nack(self, message: Any) -> None:
        if self._delivered_here(message, "nack"):
            self._once_recorded(message, nack=True)

    def _once_recorded(self, message: Any, *, nack: bool) -> None:
        recorded = _take_recorded(message)
        if recorded is None:
            try:
                self._settle_soon(message, nack)
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
                raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
            return

        def when_recorded(done: Future[bool]) -> None:
            # Runs on the store's writer thread; pika takes the ack or nack over thread-safely.
            if isinstance(done.exception(), ServiceUnavailable):
                logger.warning(
                    "message %s: its job's end is not stored (the database is unreachable); "
                    "RabbitMQ delivers it again",
                    message.message_id,
                )
            elif self.is_open:
                try:
                    self._settle_soon(message, nack)
                except Exception as exc:  # the channel closed meanwhile: RabbitMQ delivers it again
                    logger.info("message %s: not settled: %s", message.message_id, exc)

        recorded.add_done_callback(when_recorded)

    def _settle_soon(self, message: Any, nack: bool) -> None:
        """Ack (or nack) ``message`` with the others whose ends landed in the same batch: the
        connection's thread is woken once for them all, not once per message."""
        with self._settling_lock:
            try:
                self.known_tags.remove(message._tag)
            except KeyError:
                logger.warning("message %s: not settled: its delivery tag is unknown", message.message_id)
                return
            self._pend(message._tag, nack)

    def _nack(self, tag: int) -> None:
        """Dead-letter a delivery no middleware saw (undecodable, too large, malformed)."""
        with self._settling_lock:
            self._pend(tag, True)

    def _pend(self, tag: int, nack: bool) -> None:
        # Every settle of this channel goes through this list, in order: what it does not hold
        # and ``known_tags`` does not either has been sent (``_settle_pending`` relies on it).
        first = not self._settling
        self._settling.append((tag, nack))
        if first:
            self.connection.add_callback_threadsafe(self._settle_pending)

    def _settle_pending(self) -> None:
        """On the connection's thread: send every ack and nack waiting.

        The acks below every tag still open (delivered and not settled, or a nack waiting) go
        as one ``basic_ack`` with ``multiple``: RabbitMQ settles each delivery up to that tag,
        and all of those are acks. The others go one by one.
        """
        with self._settling_lock:
            pending, self._settling = self._settling, []
            acks = sorted(tag for tag, nack in pending if not nack)
            nacks = [tag for tag, nack in pending if nack]
            lowest_open = min(min(self.known_tags, default=_NO_TAG), min(nacks, default=_NO_TAG))
        below = bisect.bisect_left(acks, lowest_open)
        if below > 1:
            self.channel.basic_ack(acks[below - 1], multiple=True)
            acks = acks[below:]
        for tag in acks:
            self.channel.basic_ack(tag)
        for tag in nacks:
            self.channel.basic_nack(tag, requeue=False)

    def close(self) -> None:
        self.closed = True
        super().close()  # type: ignore[no-untyped-call]

    def _delivered_here(self, message: Any, action: str) -> bool:
        if self.closed and self.pausing:
            # A paused queue's consumer closed while its jobs ran: RabbitMQ has their messages
            # back, and pika refuses a callback on a closed connection (Dramatiq would retry forever).
            # A consumer closed by a stopping worker is not: its acks still go out.
            logger.info(
                "message %s: not %sed, its channel is closed (RabbitMQ delivers it again)",
                message.message_id,
                action,
            )
            return False
        if delivered_by(message) in (None, self):
            return True
        # Its channel closed: RabbitMQ has the message back, and its tag means another one here.
        logger.info(
            "message %s: not %sed, its channel is gone (RabbitMQ delivers it again)",
            message.message_id,
            action,
        )
        return False


def ack_after(message: Any, recorded: Future[bool]) -> None:
    """Acknowledge (or reject) ``message`` only once ``recorded``, the write of its job's end, is done."""
    setattr(message, _RECORDED, recorded)


def _take_recorded(message: Any) -> Future[bool] | None:
    """The write ``message`` waits for, which the message then stops holding: the Future's
    callback holds the message until it settles, and a cycle would wait for the cyclic GC."""
    recorded: Future[bool] | None = getattr(message, _RECORDED, None)
    if recorded is not None:
        delattr(message, _RECORDED)
    return recorded


def is_redelivered(message: Any) -> bool:
    """Whether RabbitMQ delivered ``message`` before: an earlier run of it may have died mid-job."""
    return bool(getattr(message, _REDELIVERED, False))


def delivered_by(message: Any) -> ChannelBoundConsumer | None:
    """The consumer that delivered ``message`` (None for a message of another broker)."""
    consumer = getattr(message, _DELIVERED_BY, None)
    return consumer if isinstance(consumer, ChannelBoundConsumer) else None


def is_stale(message: Any) -> bool:
    """Whether ``message`` came on a channel that has closed since: RabbitMQ delivers it again."""
    consumer = delivered_by(message)
    return consumer is not None and not consumer.is_open
