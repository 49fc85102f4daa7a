"""One worker process: consume until told to stop, then stop the way SPEC §6 requires (nothing lost).

- SIGTERM/SIGINT: stop taking messages, let in-flight jobs finish for up to the shutdown
  timeout, hand unstarted messages back to RabbitMQ, exit 0. Jobs still running then are
  recorded as ``interrupted`` and their messages go back to RabbitMQ when the process exits.
- A second SIGTERM/SIGINT: the same, at once.
- Unable to consume from RabbitMQ for longer than ``consume_timeout``: exit with
  :data:`EXIT_CANNOT_CONSUME`, saying why, so that the supervisor (or systemd, Kubernetes)
  starts a fresh process instead of keeping one that is alive but idle.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

import dramatiq

from jobs import metrics
from jobs.admin.partitions import PartitionUpkeep
from jobs.middleware.heartbeat import Replica
from jobs.settings import Settings, mask_url
from jobs.store import JobStore
from jobs.store.delayed import DelayedStore
from jobs.store.orphans import OrphanStore
from jobs.store.outbox import OutboxStore
from jobs.store.partitions import PartitionStore
from jobs.store.pauses import QueuePauseStore
from workers.dispatcher import Dispatcher
from workers.pauses import PausableConsumers, PausedAtBoot
from workers.prefetch import PrefetchingWorker, queue_prefetch
from workers.reconciler import Reconciler
from workers.relay import Relay
from workers.runtime import WorkerStack, build_worker_stack

logger = logging.getLogger("conveyor.worker")

#: Milliseconds a worker thread waits on an empty queue before checking whether to stop.
WORKER_TIMEOUT_MS = 1000
#: Exit codes of a worker process that did not stop cleanly.
EXIT_STOPPED_AT_ONCE = 1
EXIT_CANNOT_CONSUME = 4


class StopSignals:
    """Counts SIGTERM/SIGINT: the first asks for a graceful stop, the second for an immediate one."""

    def __init__(self, stop_now: Callable[[], None]) -> None:
        self.graceful = threading.Event()
        self._stop_now = stop_now
        self._count = 0

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self._count += 1
        name = signal.Signals(signum).name
        if self._count == 1:
            logger.info("received %s: finishing in-flight jobs (send it again to stop at once)", name)
            self.graceful.set()
        else:
            logger.warning("received %s again: stopping at once", name)
            self._stop_now()


#: How long a starting process waits for its consumers to attach before it says it is ready.
READY_WITHIN = 10.0


class ConsumeWatchdog:
    """Notices a process whose consumers have been disconnected from RabbitMQ for too long."""

    def __init__(self, worker: dramatiq.Worker, limit: float) -> None:
        self.worker = worker
        self.limit = limit
        self._since: float | None = None

    def stalled_queues(self) -> list[str]:
        """Queues whose consumer is disconnected (a paused queue's consumer is closed on purpose)."""
        return sorted(
            name
            for name, thread in self.worker.consumers.items()
            if not _consuming(thread) and not getattr(thread, "paused", False)
        )

    def wait_attached(self, timeout: float) -> None:
        """Wait until every consumer is attached (its queue declared, its channel consuming), so
        that "ready" means it: a consumer thread boots after ``Worker.start`` returns. Gives up
        after ``timeout`` seconds (RabbitMQ unreachable: the watchdog then takes over)."""
        deadline = time.monotonic() + timeout
        while self.stalled_queues() and time.monotonic() < deadline:
            time.sleep(0.02)

    def expired(self) -> list[str]:
        """The queues that could not be consumed for longer than the limit (empty while all is well)."""
        stalled = self.stalled_queues()
        if not stalled:
            self._since = None
            return []
        now = time.monotonic()
        if self._since is None:
            self._since = now
        return stalled if now - self._since > self.limit else []


def _consuming(thread: object) -> bool:
    connection = getattr(getattr(thread, "consumer", None), "connection", None)
    return bool(connection is not None and connection.is_open)


def run_worker_process(
    settings: Settings,
    *,
    queues: set[str],
    threads: int,
    shutdown_timeout: float,
    replica: Replica | None = None,
    metrics_dir: str | None = None,
) -> int:
    """Consume until stopped; returns the process's exit code.

    ``metrics_dir`` is the replica's metrics directory (``CONVEYOR_METRICS_PORT`` set): this
    process's metrics are written there and its health every second (``jobs/metrics.py``).
    """
    if settings.metrics_port is not None:
        metrics.enable(metrics_dir)
    stack = build_worker_stack(
        settings, threads=threads, replica=replica or Replica.create(processes=1, queues=queues)
    )
    signals = StopSignals(lambda: _stop_now(stack, "a second stop signal", EXIT_STOPPED_AT_ONCE))
    signals.install()
    worker = PrefetchingWorker(
        stack.broker,
        prefetch=queue_prefetch(settings, threads),
        queues=queues or None,
        worker_threads=threads,
        worker_timeout=WORKER_TIMEOUT_MS,
    )
    pauses = _pausable(stack, worker)
    worker.start()
    dispatcher = _start_dispatcher(stack)
    relay = _start_relay(stack)
    watchdog = ConsumeWatchdog(worker, settings.consume_timeout)
    watchdog.wait_attached(READY_WITHIN)
    logger.info(
        "worker %s ready: %d threads on %s",
        stack.identity.worker_id,
        threads,
        ", ".join(sorted(queues or stack.broker.get_declared_queues())),
    )
    while not signals.graceful.wait(1.0):
        if pauses is not None:
            pauses.refresh()
        metrics.tick(not watchdog.stalled_queues())
        stalled = watchdog.expired()
        if stalled:
            logger.error(
                "cannot consume from RabbitMQ (%s) for more than %.0f s on %s: exiting with code %d so "
                "that this process is started afresh",
                mask_url(settings.broker_url),
                settings.consume_timeout,
                ", ".join(stalled),
                EXIT_CANNOT_CONSUME,
            )
            _stop_now(stack, "RabbitMQ unreachable", EXIT_CANNOT_CONSUME)
    _shut_down(stack, worker, (dispatcher, relay), shutdown_timeout)
    return 0


def _shut_down(
    stack: WorkerStack,
    worker: dramatiq.Worker,
    chores: tuple[Dispatcher | Relay | None, ...],
    shutdown_timeout: float,
) -> None:
    """Stop consuming, then the background chores, and record what outlived the timeout."""
    worker.stop(timeout=int(shutdown_timeout * 1000))
    for chore in chores:
        if chore is not None:
            chore.stop()
            chore.join(timeout=10)
    # Jobs that outlived the timeout: their messages go back to RabbitMQ as this process exits.
    stack.lifecycle.in_flight.interrupt(f"still running after the {shutdown_timeout:g} s shutdown timeout")
    stack.stopping.set()
    stack.close()
    metrics.flush()  # the attempts of the last second
    logger.info("worker %s stopped", stack.identity.worker_id)


def _pausable(stack: WorkerStack, worker: dramatiq.Worker) -> PausableConsumers | None:
    """The paused-queue check of this process (none on the embedded broker: nothing to pause)."""
    if stack.settings.is_embedded:
        return None
    store = QueuePauseStore(stack.db, stack.settings.namespace)
    consumers = PausableConsumers(worker.consumers, lambda: set(store.paused()))
    stack.broker.add_middleware(PausedAtBoot(consumers))
    return consumers


def _start_dispatcher(stack: WorkerStack) -> Dispatcher | None:
    if stack.settings.is_embedded:
        return None
    reconciler = Reconciler(stack.settings, OrphanStore(stack.db), stack.services.registry)
    dispatcher = Dispatcher(
        stack.broker,
        DelayedStore(stack.db),
        namespace=stack.settings.namespace,
        sweep=reconciler.sweep,
        sweep_interval=stack.settings.reconcile_interval,
        upkeep=PartitionUpkeep(PartitionStore(stack.db)),
    )
    dispatcher.start()
    return dispatcher


def _start_relay(stack: WorkerStack) -> Relay | None:
    """The outbox relay of this process (``workers/relay.py``); the embedded demo has no outbox."""
    if stack.settings.is_embedded or stack.db.dialect != "postgresql":
        return None
    relay = Relay(stack.settings, stack.broker, OutboxStore(JobStore(stack.db)))
    relay.start()
    return relay


def _stop_now(stack: WorkerStack, reason: str, code: int) -> None:
    """Record what is running as interrupted and leave: RabbitMQ takes the unacknowledged messages back."""
    stack.lifecycle.in_flight.interrupt(reason)
    metrics.flush()
    logging.shutdown()
    os._exit(code)
