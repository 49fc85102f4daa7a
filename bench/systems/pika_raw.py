"""(a) Raw pika, the floor: persistent messages on a durable queue, manual acks, nothing else.

Producer: publisher confirms, either pipelined (``bulk``: a SelectConnection keeps up to
:data:`CONFIRM_WINDOW` messages unconfirmed) or waiting on each confirm (``each``: a
BlockingConnection with ``confirm_delivery``, as Dramatiq does).

Consumer (``python -m bench.systems.pika_raw --prefetch N``): one BlockingConnection per process,
``basic_qos(prefetch)``, decode the JSON body, count, ack. No threads: pika's connection is not
thread-safe, and a no-op needs none.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
from pika.spec import Basic

from bench.systems.base import (
    DEFAULT_AMQP_URL,
    ENV_AMQP_URL,
    NAMESPACE,
    Config,
    Recorder,
    RedisCountedSystem,
    launch,
    worker_env,
)

QUEUE = f"{NAMESPACE}.pika"
#: Most messages the pipelined producer leaves unconfirmed at once.
CONFIRM_WINDOW = 1000
PERSISTENT = pika.BasicProperties(delivery_mode=2, content_type="application/json")
NOOP_BODY = json.dumps({"sent_at": 0.0}).encode()


def publish_pipelined(url: str, count: int, progress: Callable[[int], None]) -> None:
    """Publish ``count`` messages with asynchronous confirms; return once RabbitMQ confirmed all."""
    outstanding: collections.deque[int] = collections.deque()
    state = {"published": 0, "confirmed": 0}
    errors: list[str] = []
    channel: Any = None

    def pump() -> None:
        while state["published"] < count and len(outstanding) < CONFIRM_WINDOW:
            channel.basic_publish("", QUEUE, NOOP_BODY, PERSISTENT)
            state["published"] += 1
            outstanding.append(state["published"])

    def on_confirm(frame: Any) -> None:
        method = frame.method
        if isinstance(method, Basic.Nack):
            errors.append(f"RabbitMQ nacked delivery {method.delivery_tag}")
        tag = method.delivery_tag
        before = len(outstanding)
        if method.multiple:
            while outstanding and outstanding[0] <= tag:
                outstanding.popleft()
        elif outstanding and outstanding[0] == tag:
            outstanding.popleft()
        else:
            outstanding.remove(tag)
        state["confirmed"] += before - len(outstanding)
        if state["confirmed"] % 1000 < before - len(outstanding):
            progress(state["confirmed"])
        if state["confirmed"] >= count or errors:
            connection.close()
        else:
            pump()

    def on_channel(ch: Any) -> None:
        nonlocal channel
        channel = ch
        ch.queue_declare(
            QUEUE,
            durable=True,
            callback=lambda _frame: ch.confirm_delivery(on_confirm, callback=lambda _f: pump()),
        )

    def on_failed(_connection: Any, exc: BaseException) -> None:
        errors.append(f"connection failed: {exc}")
        connection.ioloop.stop()

    connection = pika.SelectConnection(
        pika.URLParameters(url),
        on_open_callback=lambda conn: conn.channel(on_open_callback=on_channel),
        on_open_error_callback=on_failed,
        on_close_callback=lambda _conn, _reason: connection.ioloop.stop(),
    )
    connection.ioloop.start()
    if errors or state["confirmed"] < count:
        raise RuntimeError(errors[0] if errors else f"only {state['confirmed']} of {count} confirmed")


class PikaSystem(RedisCountedSystem):
    key = "pika"
    label = "raw pika (floor)"
    queue = QUEUE
    primary = "bulk"

    def __init__(self, config: Config, rabbit: Any) -> None:
        super().__init__(config, rabbit)
        self.producers = {
            "bulk": f"basic_publish with asynchronous confirms (window {CONFIRM_WINDOW})",
            "each": "basic_publish waiting on each confirm",
        }
        self.description = (
            f"{config.processes} processes × 1 BlockingConnection, prefetch {config.prefetch}, ack each"
        )
        self._connection: pika.BlockingConnection | None = None

    @property
    def expected_consumers(self) -> int:
        return self.config.processes

    def _channel(self) -> Any:
        if self._connection is None or not self._connection.is_open:
            self._connection = pika.BlockingConnection(pika.URLParameters(self.config.amqp_url))
            self._blocking = self._connection.channel()
            self._blocking.confirm_delivery()
            self._blocking.queue_declare(QUEUE, durable=True)
        return self._blocking

    def setup(self) -> None:
        self._channel()

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                self._connection.close()
        self._connection = None

    def reconnect(self) -> None:
        self.close()
        self._channel()

    def enqueue(self, count: int, producer: str, progress: Callable[[int], None]) -> None:
        if producer == "bulk":
            publish_pipelined(self.config.amqp_url, count, progress)
            return
        channel = self._channel()
        for i in range(count):
            channel.basic_publish("", QUEUE, NOOP_BODY, PERSISTENT)
            if i % 1000 == 999:
                progress(i + 1)

    def send_probe(self) -> None:
        body = json.dumps({"sent_at": time.time()}).encode()
        self._channel().basic_publish("", QUEUE, body, PERSISTENT)

    def start_workers(self) -> list[subprocess.Popen[bytes]]:
        env = worker_env(self.config, self.counter.prefix)
        log = self.config.log_dir / f"{self.key}.log"
        args = ["-m", "bench.systems.pika_raw", "--prefetch", str(self.config.prefetch)]
        return [launch(args, env, log) for _ in range(self.config.processes)]


def consume(prefetch: int) -> None:
    """One consumer process: count and ack every message until SIGTERM."""
    recorder = Recorder()
    connection = pika.BlockingConnection(pika.URLParameters(os.environ.get(ENV_AMQP_URL, DEFAULT_AMQP_URL)))
    channel = connection.channel()
    channel.queue_declare(QUEUE, durable=True)
    channel.basic_qos(prefetch_count=prefetch)

    def on_message(ch: Any, method: Any, _properties: Any, body: bytes) -> None:
        recorder.record(float(json.loads(body).get("sent_at") or 0.0))
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(QUEUE, on_message)
    channel.start_consuming()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prefetch", type=int, default=16)
    consume(parser.parse_args().prefetch)
