"""The record of email deliveries that keeps one job from sending its email twice.

An email job writes two rows' worth per message: the claim (``sending``, committed before
DATA) and the outcome (``sent``). On PostgreSQL each is one statement, one round trip, on the
process's direct connection (``jobs/store/direct.py``), waited for when another thread holds
it; SQLite (the demo) takes the same statements through SQLAlchemy Core. Through pooled ORM
sessions the three statements an email used to need cost more CPU than its SMTP exchange.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import delete, select
from sqlalchemy.dialects import sqlite

from jobs.store.database import Database
from jobs.store.jobs import utcnow
from jobs.store.models import EmailDeliveryRow


class DeliveryState(StrEnum):
    #: DATA was (being) sent: the server may have the message, nobody can tell.
    SENDING = "sending"
    #: The server accepted the message.
    SENT = "sent"


@dataclass(frozen=True)
class Delivery:
    job_id: str
    state: DeliveryState
    message_id: str
    accepted: list[str]
    rejected: dict[str, str]


_COLUMNS = "state, message_id, accepted, rejected"
_GET_SQL = f"SELECT {_COLUMNS} FROM email_deliveries WHERE job_id = %(job_id)s"
_CLAIM_SQL = (
    "INSERT INTO email_deliveries (job_id, state, message_id, updated_at) "
    "VALUES (%(job_id)s, 'sending', %(message_id)s, %(updated_at)s) ON CONFLICT (job_id) DO NOTHING"
)
_SENT_SQL = (
    f"INSERT INTO email_deliveries (job_id, {_COLUMNS}, updated_at) "
    "VALUES (%(job_id)s, 'sent', %(message_id)s, %(accepted)s, %(rejected)s, %(updated_at)s) "
    "ON CONFLICT (job_id) DO UPDATE SET state = 'sent', message_id = excluded.message_id, "
    "accepted = excluded.accepted, rejected = excluded.rejected, updated_at = excluded.updated_at"
)
_FORGET_SQL = "DELETE FROM email_deliveries WHERE job_id = %(job_id)s"


class DeliveryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, job_id: str) -> Delivery | None:
        """This job's delivery, None when it never claimed one (or the claim was forgotten)."""
        with self._direct() as connection:
            if connection is not None:
                row = connection.execute(_GET_SQL, {"job_id": job_id}).fetchone()
                return None if row is None else _delivery(job_id, *row)
        query = select(
            EmailDeliveryRow.state,
            EmailDeliveryRow.message_id,
            EmailDeliveryRow.accepted,
            EmailDeliveryRow.rejected,
        ).where(EmailDeliveryRow.job_id == job_id)
        with self.db.transaction() as core:
            found = core.execute(query).one_or_none()
        return None if found is None else _delivery(job_id, *found)

    def claim(self, job_id: str, message_id: str) -> Delivery | None:
        """Record ``sending``, committed before DATA: from here on, a crash leaves the outcome unknown.

        Returns:
            None when this run may send; the earlier delivery when the job has one already
            (``sent``, or ``sending`` by a run that stopped before its answer): nothing is sent.
        """
        while True:
            if self._insert_sending(job_id, message_id):
                return None
            earlier = self.get(job_id)
            if earlier is not None:  # else forgotten in between: claim again
                return earlier

    def mark_sent(self, job_id: str, message_id: str, accepted: list[str], rejected: dict[str, str]) -> None:
        values = {"job_id": job_id, "message_id": message_id, "updated_at": utcnow()}
        with self._direct() as connection:
            if connection is not None:
                connection.execute(
                    _SENT_SQL, {**values, "accepted": Jsonb(accepted), "rejected": Jsonb(rejected)}
                )
                return
        sent = {**values, "state": DeliveryState.SENT.value, "accepted": accepted, "rejected": rejected}
        statement = sqlite.insert(EmailDeliveryRow).values(**sent)
        statement = statement.on_conflict_do_update(
            index_elements=[EmailDeliveryRow.job_id], set_={k: v for k, v in sent.items() if k != "job_id"}
        )
        with self.db.transaction() as core:
            core.execute(statement)

    def forget(self, job_id: str) -> None:
        """The server refused DATA: nothing was delivered, a retry may send."""
        with self._direct() as connection:
            if connection is not None:
                connection.execute(_FORGET_SQL, {"job_id": job_id})
                return
        with self.db.transaction() as core:
            core.execute(delete(EmailDeliveryRow).where(EmailDeliveryRow.job_id == job_id))

    def _insert_sending(self, job_id: str, message_id: str) -> bool:
        values = {"job_id": job_id, "message_id": message_id, "updated_at": utcnow()}
        with self._direct() as connection:
            if connection is not None:
                return connection.execute(_CLAIM_SQL, values).rowcount == 1
        statement = sqlite.insert(EmailDeliveryRow).values(state=DeliveryState.SENDING.value, **values)
        with self.db.transaction() as core:
            inserted = core.execute(
                statement.on_conflict_do_nothing(index_elements=[EmailDeliveryRow.job_id])
            )
        return inserted.rowcount == 1

    @contextmanager
    def _direct(self) -> Iterator[psycopg.Connection[Any] | None]:
        """PostgreSQL's direct connection (waited for: a statement holds it for one round trip),
        or None with SQLite, whose statements go through SQLAlchemy Core."""
        direct = self.db.direct
        if direct is None:
            yield None
            return
        with direct.lock, direct.connect() as connection:
            yield connection


def _delivery(job_id: str, state: str, message_id: str, accepted: Any, rejected: Any) -> Delivery:
    return Delivery(
        job_id=job_id,
        state=DeliveryState(state),
        message_id=message_id,
        accepted=list(accepted or []),
        rejected=dict(rejected or {}),
    )
