"""The worker-side stack: a broker with Conveyor's middleware and actors, and one worker process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import dramatiq
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from jobs import metrics as job_metrics
from jobs.actors import declare_actors
from jobs.broker import ConveyorRabbitmqBroker, build_broker
from jobs.keyring import keyring_of
from jobs.kinds import KINDS
from jobs.middleware import Lifecycle
from jobs.middleware.heartbeat import Heartbeat, Replica, heartbeat_interval
from jobs.middleware.metrics import Metrics
from jobs.middleware.signature import Signature, signature_middleware
from jobs.middleware.stale import StaleDeliveries
from jobs.middleware.tracing import Tracing
from jobs.services import Services
from jobs.settings import Settings
from jobs.store import AttemptStore, Database, WorkerIdentity
from jobs.store.batched import BatchedAttemptStore
from jobs.store.claims import Claims
from producers.client import Client
from workers.identity import current_identity
from workers.liveness import RegistryLiveness

logger = logging.getLogger("conveyor.worker")


@dataclass
class WorkerStack:
    """Everything one worker process runs on."""

    settings: Settings
    services: Services
    broker: dramatiq.Broker
    identity: WorkerIdentity
    stopping: threading.Event
    lifecycle: Lifecycle

    @property
    def db(self) -> Database:
        return self.services.db

    def close(self) -> None:
        self.lifecycle.attempts.close()
        if isinstance(self.services.producer, Client):
            self.services.producer.close()
        self.broker.close()
        self.services.close()
        self.db.dispose()


def worker_middleware(
    lifecycle: Lifecycle,
    heartbeat: Heartbeat | None = None,
    signature: Signature | None = None,
    metrics: Metrics | None = None,
) -> list[Middleware]:
    """Dramatiq's defaults with Conveyor's job middleware, and the heartbeat, the signature
    check and the metrics when given.

    Dramatiq runs ``before_*`` hooks in this order and ``after_*`` hooks in reverse, so:

    - ``Heartbeat`` first: it counts every message as busy before another middleware may skip it.
    - ``Signature`` next, before anything that acts on a message: an unsigned or forged message
      is refused (its job failed, the message dead-lettered) before it is recorded, held or run.
      (``Heartbeat`` only counts; before it, a refused message would be uncounted on its skip.)
    - ``StaleDeliveries`` next: a message whose channel has closed runs nothing and records nothing.
    - ``Tracing`` before the lifecycle's middleware: the attempt's trace id is known before its
      start is written, and its span ends after the end is handed over.
    - ``InFlight`` before ``Recording``: it lets go of a job only after the recorder has handed
      its end over (and after any skip), so a job is never idle in between, nor left behind.
    - ``Recording`` starts the attempt; ``TakeOver`` after it looks at a start the store refused
      (a copy of a running job's message); ``LostRuns`` after both fails an attempt, however it
      started, whose job keeps killing its workers.
    - ``Metrics`` right before ``InFlight``: its ``after_*`` hooks run after the recorder's, so it
      sees each attempt's recorded outcome.
    - ``Retries`` last: its ``after_process_message`` runs first, so the recorder stores its
      decision (``retrying`` with the retry's eta, or ``failed`` once dead-lettered).
    - ``Settle``, ``Delayed`` and ``Promote`` use no job hooks (a consumer thread's shutdown, ``.DQ``
      messages, the broker's hold sink): where they sit changes nothing for a job.
    """
    return [
        *([heartbeat] if heartbeat is not None else []),
        *([signature] if signature is not None else []),
        StaleDeliveries(),
        Tracing(),
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        CurrentMessage(),
        lifecycle.settle,
        lifecycle.delayed,
        lifecycle.promote,
        *([metrics] if metrics is not None else []),
        lifecycle.in_flight,
        lifecycle.recording,
        lifecycle.take_over,
        lifecycle.lost_runs,
        Retries(),
    ]


def build_worker_stack(
    settings: Settings, *, threads: int, db: Database | None = None, replica: Replica | None = None
) -> WorkerStack:
    """A broker carrying the job middleware and every kind's actor.

    ``replica`` is the ``conveyor worker`` this process belongs to (by default a replica of
    its own); its heartbeat goes to Redis, except on ``memory://`` (the demo has no Redis).
    """
    # No pre-ping in workers: it costs a round trip per transaction, a large share of a worker's
    # time per job. A dead connection is invalidated on first use and
    # the write comes back as ServiceUnavailable, which the lifecycle's retry loop absorbs.
    db = db or Database(
        settings.database_url,
        pool_size=threads + 2,
        pre_ping=False,
        keyring=keyring_of(settings.encryption_keys),
    )
    identity = current_identity()
    stopping = threading.Event()
    services = Services(settings, db)
    heartbeat = None
    if not settings.is_embedded:
        heartbeat = Heartbeat(
            services.registry,
            namespace=settings.namespace,
            replica=replica or Replica.create(processes=1),
            threads=threads,
            ttl=settings.worker_ttl,
            worker_id=identity.worker_id,
        )
    attempts = _attempt_store(settings, db, identity)
    lifecycle = Lifecycle.build(
        attempts,
        identity,
        stopping=stopping,
        alive=RegistryLiveness(services.registry, settings.namespace) if heartbeat else lambda _: None,
        recheck_after=heartbeat_interval(settings.worker_ttl),
        max_payload_bytes=settings.max_payload_bytes,
        running_after=settings.running_after,
    )
    signature = signature_middleware(settings, attempts, identity, stopping=stopping)
    observer = Metrics() if job_metrics.enabled() else None
    broker = build_broker(settings, worker_middleware(lifecycle, heartbeat, signature, observer))
    if isinstance(broker, ConveyorRabbitmqBroker):
        # Retries and delayed messages wait in PostgreSQL, not in this process's memory.
        broker.hold = lifecycle.delayed.hold
    declare_actors(broker, services)
    services.producer = Client(settings, broker=broker, db=db)
    return WorkerStack(
        settings=settings,
        services=services,
        broker=broker,
        identity=identity,
        stopping=stopping,
        lifecycle=lifecycle,
    )


def _attempt_store(settings: Settings, db: Database, identity: WorkerIdentity) -> AttemptStore:
    """Where the lifecycle writes: group commit on PostgreSQL (the writes of all this process's
    threads share transactions), with claims that let a short run be written once, start and
    end together (``CONVEYOR_RUNNING_AFTER``); each write on its own with SQLite."""
    if db.dialect != "postgresql":
        return AttemptStore(db)
    observe = job_metrics.store_batch_written if job_metrics.enabled() else None
    claims = Claims(db, identity) if settings.running_after > 0 else None
    return BatchedAttemptStore(db, observe=observe, claims=claims)


def resolve_queues(settings: Settings, names: Iterable[str]) -> set[str]:
    """Turn ``email,images`` (or full names like ``conveyor.email``) into namespaced queue names.

    Raises:
        ValueError: a queue no job kind uses.
    """
    known = {settings.queue_name(kind.queue) for kind in KINDS.values()}
    short = {kind.queue: settings.queue_name(kind.queue) for kind in KINDS.values()}
    short.update({name: settings.queue_name(kind.queue) for name, kind in KINDS.items()})
    resolved = set()
    for name in (n.strip() for n in names):
        if not name:
            continue
        queue = name if name in known else short.get(name)
        if queue is None:
            raise ValueError(f"unknown queue {name!r}; known queues: {', '.join(sorted(short))}")
        resolved.add(queue)
    return resolved
