"""The orphan sweep every worker process runs: no job stays ``running`` or ``queued`` with nothing to run it.

A job is sent again only when all of these have held at every sweep for a while (two sweeps,
and twice the heartbeat TTL for a ``running`` job, so that a worker whose beats are merely late
is not taken for dead):
- it is ``running`` and the worker of its open attempt has no heartbeat in the registry
  (or it is ``queued``, never started, and no message is held for it in PostgreSQL);
- its queue has no ready message in RabbitMQ, so its message is not waiting there
  (a worker that dies hands its unacknowledged messages back at once, and they are ready).
Redis down means liveness is unknown: ``running`` rows are left alone until it is back.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import dramatiq

from jobs import metrics
from jobs.admin.queues import rabbitmq_counts
from jobs.kinds import KINDS
from jobs.settings import Settings
from jobs.signing import MessageSigner
from jobs.status import JobStatus
from jobs.store.delayed import HeldMessage
from jobs.store.orphans import Orphan, OrphanStore
from workers.liveness import RegistryLiveness

if TYPE_CHECKING:
    from jobs.redis_lite import RegistryClient

logger = logging.getLogger("conveyor.reconciler")


class Reconciler:
    def __init__(self, settings: Settings, store: OrphanStore, redis_client: RegistryClient) -> None:
        self.settings = settings
        self.store = store
        self.liveness = RegistryLiveness(redis_client, settings.namespace)
        #: The orphan's fresh message is signed like a producer's (None without a signing key).
        self.signer = MessageSigner.from_settings(settings)
        #: When each current candidate was first seen (monotonic seconds).
        self._since: dict[str, float] = {}

    @property
    def grace(self) -> timedelta:
        """How old a candidate must be: more than a worker's TTL, and more than a sweep interval."""
        return timedelta(seconds=max(self.settings.worker_ttl, self.settings.reconcile_interval))

    def sweep(self) -> int:
        """One sweep; returns how many jobs were sent again."""
        older_than = datetime.now(UTC) - self.grace
        candidates = self.store.candidates(self.settings.namespace, older_than)
        if any(c.status == JobStatus.RUNNING.value for c in candidates):
            live = self.liveness.workers()  # None: Redis is down, running rows are left alone
            candidates = [c for c in candidates if c.status != JobStatus.RUNNING.value or _dead(c, live)]
        if candidates:
            ready = rabbitmq_counts(self.settings, sorted({c.queue for c in candidates}))
            candidates = [c for c in candidates if ready.get(c.queue, (0, 0))[0] == 0]
        now = time.monotonic()
        self._since = {c.job_id: self._since.get(c.job_id, now) for c in candidates}
        confirmed = [
            c for c in candidates if c.kind in KINDS and now - self._since[c.job_id] >= self._patience(c)
        ]
        requeued = 0
        for orphan in confirmed:
            message = _message(orphan)
            if self.signer is not None:
                message = self.signer.sign(message)
            if self.store.requeue(orphan, HeldMessage(message, datetime.now(UTC)), older_than):
                requeued += 1
                metrics.orphan_resent(orphan.queue)
                logger.warning(
                    "job %s %s was %s with nothing to run it (%s): sent again",
                    orphan.job_id,
                    orphan.kind,
                    orphan.status,
                    f"worker {orphan.owner} is gone" if orphan.owner else "its message was never published",
                )
        return requeued

    def _patience(self, orphan: Orphan) -> float:
        """Seconds a candidate must stay one before it is acted on."""
        sweep = self.settings.reconcile_interval * 0.9  # seen at two sweeps at least
        if orphan.status == JobStatus.RUNNING.value:
            return max(sweep, 2.0 * self.settings.worker_ttl)
        return sweep


def _dead(orphan: Orphan, live: set[str] | None) -> bool:
    return live is not None and orphan.owner is not None and orphan.owner not in live


def _message(orphan: Orphan) -> dramatiq.Message[object]:
    """A fresh copy of the job's message: same id, payload and retry policy; earlier failures counted."""
    kind = KINDS[orphan.kind]
    options: dict[str, object] = {"retries": max(orphan.attempts - 1, 0)}
    if orphan.max_retries is not None:
        options["max_retries"] = orphan.max_retries
    if orphan.priority is not None:
        options["broker_priority"] = orphan.priority
    message: dramatiq.Message[object] = dramatiq.Message(
        queue_name=orphan.queue,
        actor_name=kind.actor_name,
        args=(),
        kwargs=orphan.payload,
        options=options,
        message_id=orphan.job_id,
    )
    return message
