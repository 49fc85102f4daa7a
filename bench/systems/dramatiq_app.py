"""(b) Bare Dramatiq: one no-op actor on ``RabbitmqBroker(confirm_delivery=True)``, default middleware.

The workers are Dramatiq's own CLI::

    BENCH_AMQP_URL=amqp://… python -m dramatiq bench.systems.dramatiq_app -p 2 -t 8

The broker is built when this module is imported, from ``BENCH_AMQP_URL``: the coordinator sets
that variable before importing it, and sends with ``noop.send`` on the same broker.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name, xq_name

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

QUEUE = f"{NAMESPACE}.dramatiq"

broker = RabbitmqBroker(url=os.environ.get(ENV_AMQP_URL, DEFAULT_AMQP_URL), confirm_delivery=True)
dramatiq.set_broker(broker)
recorder = Recorder()


@dramatiq.actor(queue_name=QUEUE, actor_name="bench_noop")
def noop(sent_at: float = 0.0) -> None:
    recorder.record(sent_at)


class DramatiqSystem(RedisCountedSystem):
    key = "dramatiq"
    label = "Dramatiq"
    queue = QUEUE

    def __init__(self, config: Config, rabbit: Any) -> None:
        super().__init__(config, rabbit)
        self.producers = {"each": "actor.send (confirm_delivery=True)"}
        self.description = (
            f"python -m dramatiq -p {config.processes} -t {config.threads} "
            f"(prefetch {config.prefetch} per process)"
        )

    @property
    def expected_consumers(self) -> int:
        return self.config.processes

    @property
    def queues(self) -> list[str]:
        return [QUEUE, dq_name(QUEUE), xq_name(QUEUE)]

    def close(self) -> None:
        broker.close()

    def reconnect(self) -> None:
        # Dramatiq's own way to drop this thread's connection; the next send opens a new one.
        with contextlib.suppress(Exception):
            del broker.connection

    def enqueue(self, count: int, producer: str, progress: Callable[[int], None]) -> None:
        for i in range(count):
            noop.send()
            if i % 1000 == 999:
                progress(i + 1)

    def send_probe(self) -> None:
        noop.send(sent_at=time.time())

    def start_workers(self) -> list[subprocess.Popen[bytes]]:
        args = ["-m", "dramatiq", __name__, "-p", str(self.config.processes), "-t", str(self.config.threads)]
        args += ["-Q", QUEUE]
        env = worker_env(self.config, self.counter.prefix)
        env["dramatiq_queue_prefetch"] = str(self.config.prefetch)  # Dramatiq's own setting
        return [launch(args, env, self.config.log_dir / f"{self.key}.log")]


if __name__ == "__main__":
    sys.exit("run me with: python -m dramatiq bench.systems.dramatiq_app -p 2 -t 8")
