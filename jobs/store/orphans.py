"""Jobs that nothing will run: ``running`` with a dead owner, or ``queued`` with no message.

The first happens when a message is lost with its worker (a purged queue, a lost
non-replicated node), the second when a producer dies between writing the row and
publishing. The reconciler (``workers/reconciler.py``) decides; this module reads the
candidates and puts a fresh message in line for them, guarded so that of several
replicas sweeping at once only one does it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, cast, exists, or_, select, update

from jobs import crypto
from jobs.crypto import Sealer
from jobs.errors import DecryptionError
from jobs.status import Event, JobStatus, sources, target
from jobs.store import transitions
from jobs.store.database import Database
from jobs.store.delayed import HeldMessage, hold
from jobs.store.jobs import utcnow
from jobs.store.steps import through
from jobs.store.tables import Attempts, DelayedMessages, Jobs

logger = logging.getLogger("conveyor.store")

#: Rows looked at per sweep.
SWEEP_LIMIT = 1000


@dataclass(frozen=True)
class Orphan:
    job_id: str
    kind: str
    queue: str
    status: str
    payload: dict[str, Any]
    max_retries: int | None
    priority: int | None
    attempts: int
    #: The worker of the open attempt (``running`` orphans only).
    owner: str | None


class OrphanStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def candidates(self, namespace: str, older_than: datetime) -> list[Orphan]:
        """The namespace's ``running`` jobs whose open attempt began before ``older_than``, and its
        ``queued`` jobs never started, created (or last requeued) before it, with no held message."""
        # Namespaces may share a database: each replica sweeps its own.
        own = Jobs.queue.startswith(f"{namespace}.", autoescape=True)
        latest_open = and_(
            Attempts.job_id == Jobs.id,
            Attempts.attempt == Jobs.attempts,
            Attempts.finished_at.is_(None),
            Attempts.started_at < older_than,
        )
        running = (
            select(Jobs, Attempts.worker)
            .join(Attempts, latest_open)
            .where(own, Jobs.status == JobStatus.RUNNING.value)
            .limit(SWEEP_LIMIT)
        )
        never_sent = ~exists().where(DelayedMessages.message_id == cast(Jobs.id, String))
        queued = (
            select(Jobs)
            .where(
                own,
                Jobs.status == JobStatus.QUEUED.value,
                Jobs.attempts == 0,
                Jobs.created_at < older_than,
                or_(Jobs.eta.is_(None), Jobs.eta < older_than),
                never_sent,
            )
            .limit(SWEEP_LIMIT)
        )
        with self.db.transaction() as session:
            sealer = self.db.sealer
            # A running one's row is the job's columns and its open attempt's ``worker`` (a name no
            # column of ``jobs`` has).
            found = [_orphan(row, row.worker, sealer) for row in session.execute(running).all()]
            found += [_orphan(row, None, sealer) for row in session.execute(queued).all()]
        return [orphan for orphan in found if orphan is not None]

    def requeue(self, orphan: Orphan, held: HeldMessage, older_than: datetime) -> bool:
        """Put ``held`` in line for ``orphan`` unless its row moved since it was read.

        A ``running`` orphan's open attempt is closed as ``lost`` (so a message that keeps
        killing workers still runs out of tries) and the job becomes ``retrying``; a
        ``queued`` one keeps its status and gets ``eta`` = now, which keeps the next sweeps
        off it while its new message waits. Returns whether this call did it.
        """
        now = utcnow()
        with self.db.transaction() as session:
            if orphan.status == JobStatus.RUNNING.value:
                lose = sorted(status.value for status in sources(Event.LOSE))
                guard = and_(Jobs.status.in_(lose), Jobs.attempts == orphan.attempts)
                values: dict[str, Any] = {"status": target(Event.LOSE).value, "error": _LOST, "eta": now}
            else:
                guard = and_(
                    Jobs.status == JobStatus.QUEUED.value,
                    Jobs.attempts == 0,
                    or_(Jobs.eta.is_(None), Jobs.eta < older_than),
                )
                values = {"eta": now}
            moved = session.execute(update(Jobs).where(Jobs.id == orphan.job_id, guard).values(**values))
            if not moved.rowcount:
                return False
            # Every attempt still open is closed ``lost`` (the same write as a take-over's).
            before = orphan.attempts + 1
            transitions.mark_lost(through(session), orphan.job_id, before, now, error=_LOST)
            hold(session, held, sealer=self.db.sealer)
            return True


_LOST = "WorkerLost: its worker is gone and RabbitMQ no longer held its message; sent again"


def _orphan(row: Any, worker: str | None, sealer: Sealer) -> Orphan | None:
    """The orphan of ``row``; None (left alone, logged) when its payload does not open here."""
    try:
        payload = sealer.open_json(row.payload, crypto.PAYLOAD, str(row.id))
    except DecryptionError as exc:
        logger.warning("orphaned job %s is left alone: %s", row.id, exc)
        return None
    return Orphan(
        job_id=row.id,
        kind=row.kind,
        queue=row.queue,
        status=row.status,
        payload=dict(payload),
        max_retries=row.max_retries,
        priority=row.priority,
        attempts=row.attempts,
        owner=worker,
    )
