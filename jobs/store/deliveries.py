"""The record of email deliveries that keeps one job from sending its email twice."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite

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


class DeliveryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, job_id: str) -> Delivery | None:
        with self.db.session() as session:
            row = session.get(EmailDeliveryRow, job_id)
            if row is None:
                return None
            return Delivery(
                job_id=str(row.job_id),
                state=DeliveryState(row.state),
                message_id=row.message_id,
                accepted=list(row.accepted or []),
                rejected=dict(row.rejected or {}),
            )

    def mark_sending(self, job_id: str, message_id: str) -> None:
        """Committed before DATA: from here on, a crash leaves the outcome unknown."""
        self._upsert(job_id, DeliveryState.SENDING, message_id, None, None)

    def mark_sent(self, job_id: str, message_id: str, accepted: list[str], rejected: dict[str, str]) -> None:
        self._upsert(job_id, DeliveryState.SENT, message_id, accepted, rejected)

    def forget(self, job_id: str) -> None:
        """The server refused DATA: nothing was delivered, a retry may send."""
        with self.db.session() as session:
            session.execute(delete(EmailDeliveryRow).where(EmailDeliveryRow.job_id == job_id))

    def _upsert(
        self,
        job_id: str,
        state: DeliveryState,
        message_id: str,
        accepted: list[str] | None,
        rejected: dict[str, str] | None,
    ) -> None:
        insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        values = {
            "state": state.value,
            "message_id": message_id,
            "accepted": accepted,
            "rejected": rejected,
            "updated_at": utcnow(),
        }
        statement = insert(EmailDeliveryRow).values(job_id=job_id, **values)
        statement = statement.on_conflict_do_update(index_elements=[EmailDeliveryRow.job_id], set_=values)
        with self.db.session() as session:
            session.execute(statement)
