"""The record of email deliveries that keeps one job from sending its email twice.

An email job writes two rows' worth per message: the claim (``sending``, committed before
DATA) and the outcome (``sent``). On PostgreSQL both are one statement over a JSON
array (``_WRITE_SQL``), so that a worker's writer thread (``DeliveryStore(db, batched=True)``)
groups the claims and outcomes of all its threads into one round trip and one commit, and
commits outcomes without waiting for their WAL flush (see ``_Writer``). Unbatched, the
statement carries one write on the process's direct connection (``jobs/store/direct.py``).
SQLite (the demo) takes the same writes through SQLAlchemy Core. With a durable commit per
write, the worker threads would queue behind each other's WAL flushes.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import psycopg
from sqlalchemy import delete, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url

from jobs import crypto
from jobs.crypto import Sealer
from jobs.errors import ServiceUnavailable
from jobs.store.database import Database
from jobs.store.direct import DirectConnection
from jobs.store.jobs import utcnow
from jobs.store.models import EmailDeliveryRow
from jobs.store.waiting import take_batch

logger = logging.getLogger("conveyor.store")

#: The most writes one statement carries.
MAX_BATCH = 128


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
    #: When the claim or the outcome was written.
    updated_at: datetime


@dataclass
class _Write:
    """A claim (``sent`` None), or an outcome (``sent`` = (accepted, rejected))."""

    job_id: str
    message_id: str
    sent: tuple[list[str], dict[str, str]] | None = None
    #: Also what tells a claim whose answer was lost (then retried) from an earlier run's.
    at: datetime = field(default_factory=utcnow)
    done: Future[bool] = field(default_factory=Future)


_GET_SQL = (
    "SELECT state, message_id, accepted, rejected, updated_at FROM email_deliveries WHERE job_id = %(job_id)s"
)
# The writes come as one JSON array (serialised in C; psycopg's array dumpers cost more CPU than
# the statement). Claims insert `sending` where no row is (RETURNING says which did); outcomes
# insert or update to `sent`. The two never share a job: an outcome follows its claim's commit.
_WRITE_SQL = """
WITH writes AS (
    SELECT * FROM jsonb_to_recordset(%(writes)s::jsonb)
        AS w(job_id uuid, message_id text, sent boolean, accepted jsonb, rejected jsonb, at timestamptz)
), claimed AS (
    INSERT INTO email_deliveries (job_id, state, message_id, updated_at)
    SELECT job_id, 'sending', message_id, at FROM writes WHERE NOT sent
    ON CONFLICT (job_id) DO NOTHING
    RETURNING job_id
), outcomes AS (
    INSERT INTO email_deliveries (job_id, state, message_id, accepted, rejected, updated_at)
    SELECT job_id, 'sent', message_id, accepted, rejected, at FROM writes WHERE sent
    ON CONFLICT (job_id) DO UPDATE SET state = 'sent', message_id = excluded.message_id,
        accepted = excluded.accepted, rejected = excluded.rejected, updated_at = excluded.updated_at
)
SELECT job_id FROM claimed
"""
_FORGET_SQL = "DELETE FROM email_deliveries WHERE job_id = %(job_id)s"


class DeliveryStore:
    """Claims, outcomes and reads of email deliveries.

    ``batched``: a writer thread groups the claims and outcomes of concurrent callers into one
    statement (PostgreSQL only; :meth:`close` stops it).
    """

    def __init__(self, db: Database, *, batched: bool = False) -> None:
        self.db = db
        self._writer = _Writer(db) if batched and db.direct is not None else None

    def get(self, job_id: str) -> Delivery | None:
        """This job's delivery, None when it never claimed one (or the claim was forgotten)."""
        with self._direct() as connection:
            if connection is not None:
                row = connection.execute(_GET_SQL, {"job_id": job_id}).fetchone()
                return None if row is None else _delivery(self.db.sealer, job_id, *row)
        query = select(
            EmailDeliveryRow.state,
            EmailDeliveryRow.message_id,
            EmailDeliveryRow.accepted,
            EmailDeliveryRow.rejected,
            EmailDeliveryRow.updated_at,
        ).where(EmailDeliveryRow.job_id == job_id)
        with self.db.transaction() as core:
            found = core.execute(query).one_or_none()
        return None if found is None else _delivery(self.db.sealer, job_id, *found)

    def claim(self, job_id: str, message_id: str, *, at: datetime | None = None) -> Delivery | None:
        """Record ``sending``, committed before DATA: from here on, a crash leaves the outcome unknown.

        Returns:
            None when this run may send; the earlier delivery when the job has one already
            (``sent``, or ``sending`` by a run that stopped before its answer): nothing is sent.
            A claim found with the same ``at`` is this run's own, made by an earlier call whose
            answer was lost (the caller retries with the same ``at``): None.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        at = at or utcnow()
        while True:
            if self._write(_Write(job_id, message_id, at=at)):
                return None
            earlier = self.get(job_id)
            if earlier is None:  # forgotten in between: claim again
                continue
            mine = earlier.state is DeliveryState.SENDING and _same_instant(earlier.updated_at, at)
            return None if mine else earlier

    def mark_sent(self, job_id: str, message_id: str, accepted: list[str], rejected: dict[str, str]) -> None:
        self._write(_Write(job_id, message_id, sent=(accepted, rejected)))

    def forget(self, job_id: str) -> None:
        """The server refused DATA: nothing was delivered, a retry may send."""
        with self._direct() as connection:
            if connection is not None:
                connection.execute(_FORGET_SQL, {"job_id": job_id})
                return
        with self.db.transaction() as core:
            core.execute(delete(EmailDeliveryRow).where(EmailDeliveryRow.job_id == job_id))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def _write(self, write: _Write) -> bool:
        """Whether a claim inserted its row (an outcome: True)."""
        if self._writer is not None:
            self._writer.put(write)
            return write.done.result()
        with self._direct() as connection:
            if connection is not None:
                return UUID(write.job_id) in _write_batch(connection, [write], self.db.sealer)
        return _write_core(self.db, write)

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


class _Writer:
    """One thread that writes whatever claims and outcomes have queued up.

    A batch with a claim commits durably: DATA follows it. A batch of outcomes alone commits
    without waiting for its WAL flush (``synchronous_commit=off``): the job's end, written
    after it and committed durably before the message is acknowledged, flushes it too (WAL
    is flushed in order). Should PostgreSQL crash before that, the job is run again and finds
    its claim: it fails as DeliveryUncertain, and nothing is sent twice.
    """

    def __init__(self, db: Database) -> None:
        self._sealer = db.sealer
        self._durable = DirectConnection(db.url, db.translate)
        url = make_url(db.url)
        self._lazy = (
            None  # the URL sets server options already: outcomes commit durably too
            if "options" in url.query
            else DirectConnection(
                url.update_query_dict({"options": "-csynchronous_commit=off"}).render_as_string(
                    hide_password=False
                ),
                db.translate,
            )
        )
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, daemon=True, name="delivery-writer")
        self._start = threading.Lock()

    def put(self, write: _Write) -> None:
        with self._start:
            if self._thread.ident is None:
                self._thread.start()
        self._queue.put(write)

    def close(self) -> None:
        if self._thread.ident is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
        self._durable.close()
        if self._lazy is not None:
            self._lazy.close()

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            self._write(take_batch(self._queue, first, MAX_BATCH))

    def _write(self, batch: list[_Write]) -> None:
        lazy = self._lazy is not None and all(item.sent is not None for item in batch)
        direct = self._lazy if lazy and self._lazy is not None else self._durable
        try:
            with direct.connect() as connection:
                claimed = _write_batch(connection, batch, self._sealer)
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, ServiceUnavailable):
                # One bad write must not fail its neighbours: write them one by one to isolate it.
                logger.warning("a batch of %d delivery writes failed; writing them one by one", len(batch))
                for item in batch:
                    self._write([item])
                return
            for item in batch:
                item.done.set_exception(exc)  # the caller waits an outage out and tries again
            return
        for item in batch:
            won = item.sent is not None or UUID(item.job_id) in claimed
            item.done.set_result(won)
            if won and item.sent is None:
                claimed.discard(UUID(item.job_id))  # two claims of one job in a batch: the first wins


def _write_batch(connection: psycopg.Connection[Any], batch: list[_Write], sealer: Sealer) -> set[UUID]:
    """Write claims and outcomes in one statement; returns the job ids whose claim inserted.
    The recipients (``accepted``, ``rejected``) are sealed when encryption is on."""
    # Two outcomes for one job in one statement would update its row twice: the last one wins.
    outcomes = {w.job_id: w for w in batch if w.sent is not None}
    writes = [
        {"job_id": w.job_id, "message_id": w.message_id, "sent": False, "at": w.at.isoformat()}
        for w in batch
        if w.sent is None
    ]
    writes += [
        {
            "job_id": w.job_id,
            "message_id": w.message_id,
            "sent": True,
            "accepted": sealer.seal_json(w.sent[0], crypto.ACCEPTED, w.job_id),
            "rejected": sealer.seal_json(w.sent[1], crypto.REJECTED, w.job_id),
            "at": w.at.isoformat(),
        }
        for w in outcomes.values()
        if w.sent is not None
    ]
    rows = connection.execute(_WRITE_SQL, {"writes": json.dumps(writes)}).fetchall()
    return {row[0] for row in rows}


def _write_core(db: Database, write: _Write) -> bool:
    """One claim or outcome through SQLAlchemy Core (SQLite)."""
    values: dict[str, Any] = {"job_id": write.job_id, "message_id": write.message_id, "updated_at": write.at}
    if write.sent is None:
        statement = sqlite.insert(EmailDeliveryRow).values(state=DeliveryState.SENDING.value, **values)
        with db.transaction() as core:
            inserted = core.execute(
                statement.on_conflict_do_nothing(index_elements=[EmailDeliveryRow.job_id])
            )
        return inserted.rowcount == 1
    accepted = db.sealer.seal_json(write.sent[0], crypto.ACCEPTED, write.job_id)
    rejected = db.sealer.seal_json(write.sent[1], crypto.REJECTED, write.job_id)
    values |= {"state": DeliveryState.SENT.value, "accepted": accepted, "rejected": rejected}
    upsert = sqlite.insert(EmailDeliveryRow).values(**values)
    upsert = upsert.on_conflict_do_update(
        index_elements=[EmailDeliveryRow.job_id], set_={k: v for k, v in values.items() if k != "job_id"}
    )
    with db.transaction() as core:
        core.execute(upsert)
    return True


def _delivery(
    sealer: Sealer,
    job_id: str,
    state: str,
    message_id: str,
    accepted: Any,
    rejected: Any,
    updated_at: datetime,
) -> Delivery:
    return Delivery(
        job_id=job_id,
        state=DeliveryState(state),
        message_id=message_id,
        accepted=list(sealer.open_json(accepted, crypto.ACCEPTED, job_id) or []),
        rejected=dict(sealer.open_json(rejected, crypto.REJECTED, job_id) or {}),
        updated_at=updated_at,
    )


def _same_instant(stored: datetime, at: datetime) -> bool:
    """SQLite gives back naive UTC; PostgreSQL an aware time in the session's zone."""
    return (stored if stored.tzinfo is not None else stored.replace(tzinfo=UTC)) == at
