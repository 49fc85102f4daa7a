"""Publishing with pipelined publisher confirms: ``Client.enqueue_many``, and the send-first
order of a plain ``Client.enqueue`` (``producers/sending.py``).

Dramatiq's ``RabbitmqBroker.enqueue`` waits for RabbitMQ's confirm of each message before
sending the next (a round trip each). Here messages go out on one confirm-mode channel while
up to :data:`CONFIRM_WINDOW` of them await their confirms, and :meth:`PipelinedPublisher.send`
returns before the last confirms so that the caller can work meanwhile: as durable
(persistent messages, confirmed) and far faster. Messages are published exactly as Dramatiq
would (same body, ``delivery_mode=2``, ``broker_priority`` as the AMQP priority, mandatory).

pika's blocking connection does not see confirms that arrive through the underlying channel's
callbacks (its ``process_data_events`` would wait out its whole time limit), so a wait turns
the connection's I/O loop itself, one turn per arrival, and checks after each whether the
awaited confirms are in. A plain enqueue, one message on a plain TCP connection, goes further
past pika's loop: its publish is written to the socket at once, the socket is read directly
while it awaits the confirm (pika still decodes what comes, and runs its timers), and a lone
``Basic.Ack`` is unpacked here. Everything else goes through pika as before.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import math
import select
import struct
import time
from collections.abc import Iterator, Sequence
from typing import Any

import dramatiq
import pika
import pika.exceptions
import pika.frame
from pika import spec
from pika.adapters.utils import io_services_utils
from pika.frame import Method
from pika.spec import Basic

from jobs.broker import broker_parameters
from jobs.settings import Settings
from producers.frames import PublishFrames

#: Seconds to wait for RabbitMQ to confirm published messages before giving up.
CONFIRM_TIMEOUT = 30.0
#: Most messages left unconfirmed at once; publishing pauses until half of them are confirmed.
CONFIRM_WINDOW = 2000
#: Messages encoded between two sends to RabbitMQ.
FLUSH_EVERY = 100
#: Most bytes taken from the socket at once (pika's own read size).
RECV_BYTES = 128 * 1024


_CONFIRMS = (Basic.Ack, Basic.Nack)
#: One ``Basic.Ack`` method frame, as RabbitMQ confirms a message: frame type, channel, size,
#: method (class 60, method 80), delivery tag, the ``multiple`` bit, frame end (21 bytes).
_ACK_FRAME = struct.Struct(">BHIIQBB")
#: pika's transport of a plain TCP connection, whose socket :func:`_write_now` writes to (None
#: if pika no longer has it: everything then goes through pika's buffer).
_PLAIN_TRANSPORT = getattr(io_services_utils, "_AsyncPlaintextTransport", None)
#: Dramatiq's default encoder's JSON (``dramatiq.encoder.JSONEncoder``), built once: ``json.dumps``
#: with arguments builds a new encoder each call, and ``Message.asdict`` walks the dataclass's
#: fields each time; together a fifth of ``enqueue_many``'s CPU.
_JSON = json.JSONEncoder(separators=(",", ":"))
_FIELDS = tuple(field.name for field in dataclasses.fields(dramatiq.Message))


def encode(message: dramatiq.Message[Any]) -> bytes:
    """``message.encode()``, byte for byte, for less CPU (another encoder set in Dramatiq is used
    as it is)."""
    if type(dramatiq.get_encoder()) is not dramatiq.JSONEncoder:
        return message.encode()
    return _JSON.encode({name: getattr(message, name) for name in _FIELDS}).encode("utf-8")


def _idle_plain_transport(connection: Any) -> Any:
    """pika's transport of ``connection`` when it is plain TCP, open, with nothing waiting in its
    buffer (what may be written to and read from past pika's loop), else None."""
    transport: Any = getattr(connection, "_transport", None)
    if (
        _PLAIN_TRANSPORT is None
        or type(transport) is not _PLAIN_TRANSPORT
        or transport._tx_buffers
        or transport._state != transport._STATE_ACTIVE
    ):
        return None
    return transport


def _write_now(connection: Any, frames: bytes) -> bool:
    """Write a publish's ``frames`` to the socket of pika's ``connection`` at once; False (nothing
    done) unless it is a plain TCP connection with nothing waiting in its buffer.

    pika buffers what it sends and has its I/O loop write it once the socket is writable: two
    ``epoll_ctl`` calls to watch for that and stop, and a turn of the loop, before the message
    leaves (about 60 µs of a plain enqueue's 190 µs before its message left, measured on the
    development machine). What the socket does not take at once (it is full) goes into pika's
    buffer as pika would have put it, for the loop to send. TLS connections keep pika's way.

    Raises:
        OSError: the connection broke (the caller closes it).
    """
    transport = _idle_plain_transport(connection)
    if transport is None:
        return False
    try:
        sent = transport._sock.send(frames)
    except BlockingIOError:
        sent = 0
    # What pika's _output_marshaled_frames counts (its heartbeat checker reads bytes_sent).
    connection.bytes_sent += len(frames)
    connection.frames_sent += 3  # method, content header, body
    if sent < len(frames):
        transport.write(frames[sent:])
    return True


class PublishNotConfirmed(pika.exceptions.AMQPError):  # type: ignore[misc]
    """RabbitMQ refused (nack) or returned some messages, or did not confirm them in time."""


class PipelinedPublisher:
    """One connection and one confirm-mode channel, opened on first use (not thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        # Delivery tags awaiting their confirm, in publishing order (RabbitMQ confirms in order).
        self._outstanding: collections.deque[int] = collections.deque()
        self._refused = 0
        self._next_tag = 0
        self._sent = 0
        self._frames: PublishFrames | None = None
        self._watchdog_armed = False
        #: Watches the connection's socket for :meth:`_read_now` (made for each connection).
        self._readable: Any = None

    def publish(self, messages: Sequence[dramatiq.Message[Any]]) -> None:
        """Publish ``messages`` (to their own queues, which must exist) and wait for every confirm.

        Raises:
            pika.exceptions.AMQPError: the connection failed, or RabbitMQ did not take them all;
                the caller may publish the same messages again (duplicates are harmless: a job
                runs at most once per delivery and a finished job's copy is skipped).
        """
        self.send(messages)
        self.confirm()

    def send(self, messages: Sequence[dramatiq.Message[Any]]) -> None:
        """Publish ``messages`` and hand them to the socket without waiting for the confirms of
        the last :data:`CONFIRM_WINDOW`; :meth:`confirm` waits for those.

        Raises:
            pika.exceptions.AMQPError: as :meth:`publish`.
        """
        # One message (a plain enqueue) goes straight to the socket: no turn of pika's loop.
        alone = len(messages) == 1
        with self._closed_on_error():
            channel = self._open()
            self._outstanding.clear()
            self._refused = 0
            self._sent = len(messages)
            for count, message in enumerate(messages, 1):
                if len(self._outstanding) >= CONFIRM_WINDOW:
                    self._await_confirms(CONFIRM_WINDOW // 2)
                elif count % FLUSH_EVERY == 0:
                    self._flush()
                self._publish_one(channel, message, now=alone)
                self._next_tag += 1
                self._outstanding.append(self._next_tag)
            self._flush(only_if_buffered=alone)

    def _publish_one(self, channel: Any, message: dramatiq.Message[Any], *, now: bool = False) -> None:
        """Publish ``message``: buffered in pika, or (``now``) written to the socket at once."""
        body = encode(message)
        priority = message.options.get("broker_priority")
        frames = self._frames.marshal(message.queue_name, priority, body) if self._frames else None
        if frames is None:
            channel.basic_publish(
                exchange="",
                routing_key=message.queue_name,
                body=body,
                properties=pika.BasicProperties(delivery_mode=2, priority=priority),
                mandatory=True,
            )
            return
        if not channel.is_open:  # what basic_publish would check
            raise pika.exceptions.ChannelWrongStateError("Channel is closed.")
        if not (now and _write_now(channel.connection, frames)):
            channel.connection._output_marshaled_frames([frames])

    def confirm(self) -> None:
        """Wait until RabbitMQ confirmed every message of the last :meth:`send`.

        Raises:
            pika.exceptions.AMQPError: as :meth:`publish`.
        """
        with self._closed_on_error():
            self._await_confirms(0)

    @contextlib.contextmanager
    def _closed_on_error(self) -> Iterator[None]:
        # After a failure the channel's state (which tags are confirmed) is unknown: start afresh.
        try:
            yield
        except (pika.exceptions.AMQPError, OSError):
            self.close()
            raise

    def _flush(self, *, only_if_buffered: bool = False) -> None:
        """Send what is buffered now, so RabbitMQ works on it while we encode the next messages
        (and take the confirms already in)."""
        assert self._connection is not None
        # pika sends each buffered piece with its own send() call; joined, they go out in one.
        buffers = getattr(getattr(self._connection._impl, "_transport", None), "_tx_buffers", None)
        if not isinstance(buffers, collections.deque):
            self._connection.process_data_events(time_limit=0)
            return
        if not buffers:
            if not only_if_buffered:
                self._connection.process_data_events(time_limit=0)
            return
        if len(buffers) > 1:
            joined = b"".join(buffers)
            buffers.clear()
            buffers.append(joined)
        # With bytes to send, pika's transport watches the socket for writability: one turn of
        # the I/O loop sends them at once (and handles whatever arrived). Cheaper than
        # process_data_events, which sets a timer and wraps the turn in several closures.
        self._turn()

    def _turn(self) -> None:
        """One turn of pika's I/O loop: waits until the socket is ready or the next timer (the
        watchdog at the latest) is due, sends and receives (confirms), runs the due timers.
        With nothing to send, the socket is read here rather than by the loop (:meth:`_read_now`)."""
        assert self._connection is not None
        ioloop = self._connection._impl.ioloop
        if not self._read_now(self._connection._impl):
            ioloop.poll()
        ioloop.process_timeouts()
        if self._channel is None or not self._channel.is_open:
            # The connection or the channel closed under us: nothing more comes. pika completes a
            # connection's close (its socket included) in later turns of its loop, which its own
            # wait runs, raising the reason; a channel closed alone ends that wait at its limit.
            if not self._connection.is_closed:
                self._connection.process_data_events(time_limit=1.0)
            closed = getattr(self._connection, "_closed_result", None)
            error = getattr(getattr(closed, "value", None), "error", None)
            # What pika's own wait does once it sees the close: release the I/O loop (its
            # wake-up socket pair would be left open).
            cleanup = getattr(self._connection, "_cleanup", None)
            if self._connection.is_closed and callable(cleanup):
                cleanup()
            if isinstance(error, BaseException):
                raise error
            raise PublishNotConfirmed("the channel to RabbitMQ closed before the confirms came")

    def _read_now(self, impl: Any) -> bool:
        """Wait until the socket has something (or pika's next timer, the watchdog at the latest,
        is due), and hand what it has to pika to decode (confirms go to :meth:`_confirmed`).

        What pika's loop does when only the socket can wake it, for about 7 % less of a plain
        enqueue's CPU (measured): its turn builds event maps, dispatches through wrappers, and
        reads on until the socket raises ``EAGAIN``. False (nothing done) unless the connection
        is plain TCP, with nothing to send, and pika's loop has what this needs; a closed socket
        is left to pika's loop too (it closes the connection and says why).

        Raises:
            OSError: the connection broke (the caller closes it).
        """
        transport = _idle_plain_transport(impl)
        remaining = getattr(impl.ioloop, "_get_remaining_interval", None)
        if transport is None or not callable(remaining):
            return False
        if self._readable is None:
            self._readable = select.poll()
            self._readable.register(transport._sock, select.POLLIN)
        wait = remaining()
        if not self._readable.poll(None if wait is None else math.ceil(max(wait, 0.0) * 1000)):
            return True  # a timer is due: the caller runs it
        try:
            data = transport._sock.recv(RECV_BYTES)
        except BlockingIOError:
            return True
        if not data:
            return False  # the end of the stream: pika's loop sees it too, and closes
        if not self._took_ack(impl, data):
            impl._proto_data_received(data)
        return True

    def _took_ack(self, impl: Any, data: bytes) -> bool:
        """Take ``data`` when it is one ``Basic.Ack`` for this channel and nothing else (what a
        plain enqueue waits for), counted as pika counts what it reads; False (nothing done) for
        anything else, which pika decodes. pika's decoding of one confirm (a frame object, a
        method object, its buffer trimmed) was a tenth of the producer's time holding the GIL."""
        undecoded: Any = getattr(impl, "_frame_buffer", None)  # what pika holds of a frame begun
        if len(data) != _ACK_FRAME.size or undecoded is None or undecoded or self._channel is None:
            return False
        kind, channel, size, method, tag, bits, end = _ACK_FRAME.unpack(data)
        if (kind, channel, size, method, end) != (
            spec.FRAME_METHOD,
            self._channel.channel_number,
            _ACK_FRAME.size - spec.FRAME_HEADER_SIZE - spec.FRAME_END_SIZE,
            Basic.Ack.INDEX,
            spec.FRAME_END,
        ):
            return False
        impl.bytes_received += len(data)  # pika's heartbeat checker reads it
        impl.frames_received += 1
        self._confirmed(tag, multiple=bool(bits & 1), refused=False)
        return True

    def _await_confirms(self, down_to: int) -> None:
        """Send what is buffered and take confirms until at most ``down_to`` are unconfirmed.

        Raises:
            PublishNotConfirmed: RabbitMQ refused or returned a message, or confirms stopped coming.
        """
        if self._connection is None:
            raise PublishNotConfirmed("the connection to RabbitMQ was lost before the confirms came")
        self._flush(only_if_buffered=True)
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while len(self._outstanding) > down_to and not self._refused:
            if time.monotonic() >= deadline:
                raise PublishNotConfirmed(
                    f"RabbitMQ did not confirm {len(self._outstanding)} of {self._sent} messages "
                    f"within {CONFIRM_TIMEOUT:g} s"
                )
            self._arm_watchdog(deadline - time.monotonic())
            # Returns once something arrived (the confirms, handled by _on_confirm meanwhile) or
            # the watchdog is due.
            self._turn()
        if self._refused:
            raise PublishNotConfirmed(
                f"RabbitMQ refused or could not route {self._refused} of {self._sent} messages"
            )

    def _arm_watchdog(self, delay: float) -> None:
        # One timer at a time for every wait, rather than one per wait: pika keeps a cancelled
        # timer in its heap until its deadline, and a heap of thousands makes every enqueue pay
        # for Python-level heap comparisons. A timer of the I/O loop itself: its callback runs
        # within the loop's turn (a BlockingConnection timer would wait for process_data_events).
        if not self._watchdog_armed and self._connection is not None:
            self._watchdog_armed = True
            self._connection._impl.ioloop.call_later(max(delay, 0.0), self._on_watchdog)

    def _on_watchdog(self) -> None:
        """Ends the turn it was armed for; a later wait re-arms it for its own deadline."""
        self._watchdog_armed = False

    def _open(self) -> Any:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self.close()
        self._connection = pika.BlockingConnection(broker_parameters(self.settings))
        blocking = self._connection.channel()
        # pika's blocking channel waits for each confirm; its underlying channel lets confirms
        # arrive asynchronously while we keep publishing.
        channel = blocking._impl
        channel.add_on_return_callback(self._on_return)
        done: list[bool] = []
        channel.confirm_delivery(
            ack_nack_callback=self._on_confirm, callback=lambda _frame: done.append(True)
        )
        # A short limit: the blocking connection does not see the reply arrive on the underlying
        # channel (see the module's docstring), so each call waits out its whole limit (a limit of
        # 50 ms cost every new connection's first publish 50 ms).
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while not done:
            if time.monotonic() > deadline:
                raise PublishNotConfirmed("RabbitMQ did not put the channel in confirm mode in time")
            self._connection.process_data_events(time_limit=0.001)
        self._channel = channel
        self._next_tag = 0
        self._watchdog_armed = False
        self._readable = None
        self._take_confirms_first(channel.channel_number)
        # Frames marshaled here need pika's way to hand them to its transport (pika 1.x has it).
        emits = callable(getattr(channel.connection, "_output_marshaled_frames", None))
        self._frames = PublishFrames(channel.channel_number) if emits else None
        return channel

    def _take_confirms_first(self, channel_number: int) -> None:
        """Hand this channel's confirms to :meth:`_on_confirm` as soon as pika has decoded them.

        pika finds a confirm's callback through its generic callback registry, which cost almost
        half of the CPU of taking a confirm (a third of a plain enqueue's wait); every other frame
        still goes the usual way. Left as it is when pika has no ``_process_frame`` to wrap.
        """
        assert self._connection is not None
        impl = self._connection._impl
        process_frame = getattr(impl, "_process_frame", None)
        if not callable(process_frame) or not hasattr(impl, "frames_received"):
            return

        def take_confirms_first(value: Any) -> None:
            if (
                type(value) is pika.frame.Method
                and value.channel_number == channel_number
                and type(value.method) in _CONFIRMS
            ):
                impl.frames_received += 1  # as pika counts (its heartbeat checker reads it)
                self._on_confirm(value)
                return
            process_frame(value)

        impl._process_frame = take_confirms_first

    def _on_confirm(self, frame: Method[Any]) -> None:
        method = frame.method
        self._confirmed(method.delivery_tag, multiple=method.multiple, refused=isinstance(method, Basic.Nack))

    def _confirmed(self, tag: int, *, multiple: bool, refused: bool) -> None:
        """RabbitMQ confirmed (or, ``refused``, nacked) message ``tag``, and (``multiple``) every
        earlier one."""
        before = len(self._outstanding)
        if multiple:
            while self._outstanding and self._outstanding[0] <= tag:
                self._outstanding.popleft()
        elif self._outstanding and self._outstanding[0] == tag:
            self._outstanding.popleft()
        else:
            with contextlib.suppress(ValueError):
                self._outstanding.remove(tag)
        if refused:
            self._refused += before - len(self._outstanding)

    def _on_return(self, _channel: Any, _method: Any, _properties: Any, _body: bytes) -> None:
        # An unroutable message (its queue is gone) is returned before it is confirmed.
        self._refused += 1

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.close()
