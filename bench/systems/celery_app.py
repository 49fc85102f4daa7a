"""(c) Celery: one no-op task over pyamqp on the same RabbitMQ, no result backend.

Set up to give what Dramatiq and Conveyor give: ``task_acks_late`` (acknowledged after the task),
publisher confirms (``confirm_publish``), persistent messages on a durable queue, and the same
prefetch per process as the other systems (``threads × --prefetch``) through
``--prefetch-multiplier``. Two pools:

- prefork: ``celery worker -P prefork -c P``, multiplier ``threads × prefetch`` (that many
  unacked per process);
- threads: P instances of ``celery worker -P threads -c T``, multiplier ``prefetch`` (T ×
  prefetch unacked each).

Gossip, mingle and the event heartbeat are off (``--without-gossip --without-mingle
--without-heartbeat``), as usual for a worker fleet that does not need them.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

from celery import Celery
from kombu import pools

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

QUEUE = f"{NAMESPACE}.celery"

app = Celery(
    "bench", broker=os.environ.get(ENV_AMQP_URL, DEFAULT_AMQP_URL).replace("amqp://", "pyamqp://", 1)
)
app.conf.update(
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    task_acks_late=True,
    task_ignore_result=True,
    result_backend=None,
    broker_transport_options={"confirm_publish": True},
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    accept_content=["json"],
    worker_send_task_events=False,
    worker_hijack_root_logger=False,
)
recorder = Recorder()


@app.task(name="bench.noop", ignore_result=True)
def noop(sent_at: float = 0.0) -> None:
    recorder.record(sent_at)


class CelerySystem(RedisCountedSystem):
    queue = QUEUE

    def __init__(self, config: Config, rabbit: Any, pool: str) -> None:
        super().__init__(config, rabbit)
        self.pool = pool
        self.producers = {"each": "task.delay (confirm_publish)"}
        self.key = f"celery_{pool}"
        self.label = f"Celery ({pool})"
        if pool == "prefork":
            self.instances, self.concurrency, self.multiplier = 1, config.processes, config.prefetch
        else:
            self.instances, self.concurrency, self.multiplier = (
                config.processes,
                config.threads,
                config.prefetch_per_thread,
            )
        self.description = (
            f"{self.instances} × celery worker -P {pool} -c {self.concurrency} "
            f"--prefetch-multiplier {self.multiplier}, acks_late"
        )

    @property
    def expected_consumers(self) -> int:
        return self.instances

    def reconnect(self) -> None:
        # Close kombu's connection and producer pools; the next delay() builds new ones.
        pools.reset()
        app._pool = None
        app.amqp._producer_pool = None

    def enqueue(self, count: int, producer: str, progress: Callable[[int], None]) -> None:
        for i in range(count):
            noop.delay()
            if i % 1000 == 999:
                progress(i + 1)

    def send_probe(self) -> None:
        noop.delay(sent_at=time.time())

    def start_workers(self) -> list[subprocess.Popen[bytes]]:
        env = worker_env(self.config, self.counter.prefix)
        workers = []
        for n in range(self.instances):
            args = ["-m", "celery", "-A", __name__, "worker", "-P", self.pool, "-c", str(self.concurrency)]
            args += ["--prefetch-multiplier", str(self.multiplier), "-Q", QUEUE, "-n", f"{self.key}{n}@%h"]
            args += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"]
            workers.append(launch(args, env, self.config.log_dir / f"{self.key}.log"))
        return workers
