"""A plain enqueue's publish is written to the socket at once (``producers.pipelined._write_now``):
through pika's own plain transport on a real socket pair, the bytes arrive whole and in order, a
socket that takes only part leaves the rest to pika's buffer, and anything else is left to pika."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pika.adapters.select_connection import IOLoop
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport
from pika.adapters.utils.selector_ioloop_adapter import SelectorIOServicesAdapter

from producers.pipelined import _write_now


@dataclass
class Connection:
    """What ``_write_now`` reads and counts of pika's connection (the transport itself is pika's)."""

    _transport: Any
    bytes_sent: int = 0
    frames_sent: int = 0
    received: list[bytes] = field(default_factory=list)


class Protocol:
    """The transport's protocol end: this test only writes."""

    def data_received(self, data: bytes) -> None:  # pragma: no cover - nothing is read here
        raise AssertionError("unexpected data")

    def eof_received(self) -> bool:  # pragma: no cover
        return False


@pytest.fixture
def pair() -> Iterator[tuple[Connection, socket.socket, IOLoop]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    loop = IOLoop()
    loop.activate_poller()  # what pika's start() does
    transport = _AsyncPlaintextTransport(ours, Protocol(), SelectorIOServicesAdapter(loop))
    yield Connection(transport), theirs, loop
    loop.deactivate_poller()
    loop.close()
    ours.close()
    theirs.close()


def read_all(theirs: socket.socket, size: int, loop: IOLoop) -> bytes:
    """Read ``size`` bytes, turning pika's loop so that it sends what it buffered."""
    theirs.settimeout(0.05)
    data = b""
    while len(data) < size:
        with contextlib.suppress(TimeoutError):
            data += theirs.recv(size - len(data))
        # Once room was made, one turn of the loop sends more (a watchdog bounds the wait).
        loop.call_later(0.05, lambda: None)
        loop.poll()
        loop.process_timeouts()
    return data


def test_a_publish_goes_to_the_socket_at_once_and_is_counted(
    pair: tuple[Connection, socket.socket, IOLoop],
) -> None:
    connection, theirs, _loop = pair
    frames = b"frames of one publish" * 10

    assert _write_now(connection, frames)

    assert not connection._transport._tx_buffers  # nothing left for pika's loop
    assert theirs.recv(len(frames)) == frames
    assert (connection.bytes_sent, connection.frames_sent) == (len(frames), 3)


def test_what_a_full_socket_does_not_take_waits_in_pikas_buffer_and_follows_in_order(
    pair: tuple[Connection, socket.socket, IOLoop],
) -> None:
    connection, theirs, loop = pair
    frames = bytes(range(256)) * 8192  # 2 MiB: more than a socket pair's buffers hold

    assert _write_now(connection, frames)
    assert connection._transport._tx_buffers  # the rest, for pika's loop to send

    assert read_all(theirs, len(frames), loop) == frames
    assert not connection._transport._tx_buffers


def test_a_publish_waits_behind_what_pika_has_buffered(
    pair: tuple[Connection, socket.socket, IOLoop],
) -> None:
    connection, theirs, loop = pair
    connection._transport.write(b"first")

    assert not _write_now(connection, b"second")  # the caller hands it to pika, after "first"
    connection._transport.write(b"second")

    assert read_all(theirs, 11, loop) == b"firstsecond"


def test_another_transport_is_left_to_pika() -> None:
    assert not _write_now(Connection(object()), b"frames")
    assert not _write_now(Connection(None), b"frames")
