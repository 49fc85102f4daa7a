"""Messages held in PostgreSQL until they are due: delayed enqueues and retries waiting out a backoff.

Dramatiq keeps a delayed message unacknowledged in a worker's memory until it is due,
which trips RabbitMQ's ``consumer_timeout`` (30 min by default) and grows the worker
with the delay (Dramatiq #827). Conveyor keeps them here instead; every replica's
dispatcher publishes what is due, each row taken by one replica (``SKIP LOCKED``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dramatiq
from dramatiq.common import q_name
from sqlalchemy import Connection, String, delete, func, select
from sqlalchemy.dialects import postgresql

from jobs import crypto
from jobs.crypto import Sealer
from jobs.errors import DecryptionError
from jobs.store.database import Database
from jobs.store.steps import param, step
from jobs.store.tables import DelayedMessages

logger = logging.getLogger("conveyor.store")
#: The option a held message is published with: its due time, in ms since 1970 (like ``eta``).
DUE_OPTION = "conveyor_due_at"
#: Held messages already reported as unreadable by this process (reported once, not every round).
_unreadable: set[str] = set()


@dataclass(frozen=True)
class HeldMessage:
    """A message to publish to its queue (never to a ``.DQ``) once ``due_at`` has come."""

    message: dramatiq.Message[Any]
    due_at: datetime

    @classmethod
    def of(cls, message: dramatiq.Message[Any] | dramatiq.MessageProxy, due_at: datetime) -> HeldMessage:
        """The message bound for its canonical queue, without the ``eta`` Dramatiq adds for ``.DQ``."""
        bound = message.copy(queue_name=q_name(message.queue_name))
        bound.options.pop("eta", None)  # copy() made a new options dict: the original keeps its eta
        # Its due time travels with it: its queue wait is counted from then, not from its enqueue.
        bound.options[DUE_OPTION] = round(due_at.timestamp() * 1000)
        return cls(bound, due_at)


#: A message held until it is due, replacing an earlier row of the same message.
_held_insert = postgresql.insert(DelayedMessages).values(
    message_id=param("held_id", String()),
    queue=param("held_queue", String()),
    due_at=param("held_due_at", DelayedMessages.due_at.type),
    body=param("held_body", DelayedMessages.body.type),
    created_at=param("now", DelayedMessages.created_at.type),
)
HOLD = step(
    _held_insert.on_conflict_do_update(
        index_elements=[DelayedMessages.message_id],
        set_={
            DelayedMessages.due_at: _held_insert.excluded.due_at,
            DelayedMessages.body: _held_insert.excluded.body,
            DelayedMessages.queue: _held_insert.excluded.queue,
        },
    )
)


def held_params(held: HeldMessage, now: datetime, *, sealer: Sealer) -> dict[str, Any]:
    """The :data:`HOLD` parameters of ``held``: its body sealed when encryption is on (it
    carries the job's payload)."""
    message_id = held.message.message_id
    return {
        "held_id": message_id,
        "held_queue": held.message.queue_name,
        "held_due_at": held.due_at,
        "held_body": sealer.seal_bytes(held.message.encode(), crypto.HELD_BODY, message_id),
        "now": now,
    }


def hold(executor: Connection | Any, *held: HeldMessage, sealer: Sealer) -> None:
    """Add ``held`` to the executor's transaction (each replacing a row of the same message)."""
    if not held:
        return
    now = datetime.now(UTC)
    rows = [HOLD.core_params(held_params(h, now, sealer=sealer)) for h in held]
    executor.execute(HOLD.statement, rows)


class DelayedStore:
    """The ``delayed_messages`` table."""

    #: Messages published per transaction.
    BATCH = 500

    def __init__(self, db: Database) -> None:
        self.db = db

    def hold(self, held: HeldMessage) -> None:
        with self.db.transaction() as session:
            hold(session, held, sealer=self.db.sealer)

    def dispatch_due(
        self, publish: Callable[[dramatiq.Message[Any]], object], *, namespace: str, limit: int = BATCH
    ) -> int:
        """Publish up to ``limit`` due messages, deleting each row in the transaction that locked it.

        A row is deleted only if its publish returned (RabbitMQ confirmed it); a publish
        error rolls the whole batch back for the next round. Rows locked by another
        replica are skipped, so replicas share the work without a leader.

        Returns:
            How many messages were published.
        """
        query = (
            select(DelayedMessages.message_id, DelayedMessages.body)
            .where(
                DelayedMessages.due_at <= datetime.now(UTC),
                # Namespaces may share a database; each publishes only to its own queues.
                DelayedMessages.queue.startswith(f"{namespace}.", autoescape=True),
            )
            .order_by(DelayedMessages.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self.db.transaction() as session:
            published = [
                message_id
                for message_id, body in session.execute(query).all()
                if self._publish(publish, message_id, body)
            ]
            if published:
                session.execute(delete(DelayedMessages).where(DelayedMessages.message_id.in_(published)))
            return len(published)

    def _publish(
        self, publish: Callable[[dramatiq.Message[Any]], object], message_id: str, body: bytes
    ) -> bool:
        """Publish one held message; False (it stays held) when its sealed body does not open here:
        its key is missing on this replica, or it was altered. The others are not held up by it."""
        try:
            plain = self.db.sealer.open_bytes(body, crypto.HELD_BODY, message_id)
        except DecryptionError as exc:
            if message_id not in _unreadable:
                _unreadable.add(message_id)
                logger.warning("held message %s stays held: %s", message_id, exc)
            return False
        publish(dramatiq.Message.decode(plain))
        return True

    def forget(self, message_ids: Iterable[str]) -> int:
        """Drop held messages (their jobs were cancelled or retried now)."""
        ids = list(message_ids)
        if not ids:
            return 0
        with self.db.transaction() as session:
            result = session.execute(delete(DelayedMessages).where(DelayedMessages.message_id.in_(ids)))
            return int(result.rowcount)

    def count_by_queue(self) -> dict[str, tuple[int, datetime | None]]:
        """Per queue: how many messages are held, and when the next is due."""
        query = select(DelayedMessages.queue, func.count(), func.min(DelayedMessages.due_at)).group_by(
            DelayedMessages.queue
        )
        with self.db.transaction() as session:
            return {queue: (int(count), due) for queue, count, due in session.execute(query).all()}
