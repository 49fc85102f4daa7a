"""The scheduler loop: lead (or wait to), enqueue each due tick exactly once, sleep until the next.

Exactly once, with any number of replicas: only the holder of the namespace's advisory lock
enqueues; each tick is enqueued with the idempotency key ``schedule:<ns>:<entry>:<tick>``, so a
tick enqueued twice (a leader that lost its lock mid-round, a crash before ``schedule_ticks``
moved on) is still one job; and ``schedule_ticks`` is moved forward only after the enqueue, so a
new leader starts from the last tick enqueued and catches up, rather than skipping.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

from jobs.errors import ServiceUnavailable
from jobs.schedule.cron import utc_iso
from jobs.schedule.leader import LeaderLock
from jobs.schedule.spec import CatchUp, Schedule, ScheduleEntry
from jobs.services import Producer
from jobs.store import Database
from jobs.store.schedule import TickStore

if TYPE_CHECKING:
    from jobs.admin.retention import Retention

logger = logging.getLogger("conveyor.scheduler")

#: Ticks: the most one entry catches up after downtime (``catch_up = "all"``); older ones are skipped.
MAX_CATCH_UP = 100
#: A tick later than this is missed, and skipped with ``catch_up = "none"``.
ON_TIME_GRACE = timedelta(seconds=60)
#: Seconds between a follower's attempts to take the lock.
LOCK_RETRY = 1.0
#: Seconds: the longest sleep, so that the leader checks its lock and a stop is seen promptly.
MAX_SLEEP = 1.0
#: Seconds before a round that met an outage (RabbitMQ, PostgreSQL) is tried again.
OUTAGE_RETRY = 1.0
#: Seconds between two retention runs of the leader.
RETENTION_INTERVAL = 3600.0
#: Seconds before a round that failed unexpectedly is tried again.
ERROR_RETRY = 5.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Due(NamedTuple):
    """What one entry has due at one moment."""

    #: The ticks to enqueue, oldest first.
    ticks: list[datetime]
    #: The newest due tick, enqueued or skipped (``None``: nothing is due).
    newest: datetime | None
    #: Whether the entry's catch-up rule skips some due ticks.
    skipped: bool


def due_ticks(entry: ScheduleEntry, last: datetime, now: datetime) -> Due:
    """The ticks of ``entry`` in ``(last, now]`` to enqueue, by its catch-up rule."""
    limit = 1 if entry.catch_up is CatchUp.LATEST else MAX_CATCH_UP
    ticks, skipped = entry.timing.latest(last, now, limit)
    newest = ticks[-1] if ticks else None
    if entry.catch_up is CatchUp.NONE:
        on_time = [tick for tick in ticks if tick >= now - ON_TIME_GRACE]
        skipped = skipped or len(on_time) < len(ticks)
        ticks = on_time
    return Due(ticks, newest, skipped)


def replica_identity() -> str:
    """``host:pid:random``: names a replica in logs and in ``pg_stat_activity``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


def _now() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    """One replica running a schedule in one namespace; start as many as wanted, anywhere.

    ``producer`` (a ``producers.Client``) enqueues the due ticks; ``db`` keeps the last ones.
    Tests drive :meth:`step` with their own ``now``, or :meth:`run` in a thread with a stop event.
    """

    def __init__(
        self,
        schedule: Schedule,
        producer: Producer,
        db: Database,
        *,
        identity: str | None = None,
        clock: Callable[[], datetime] = _now,
        retention: Retention | None = None,
        upkeep: Callable[[], object] | None = None,
    ) -> None:
        self.schedule = schedule
        self.producer = producer
        self.namespace = producer.settings.namespace
        self.identity = identity or replica_identity()
        self.ticks = TickStore(db, self.namespace)
        self.lock = LeaderLock(producer.settings.database_url, self.namespace, self.identity)
        self.clock = clock
        self._leading: bool | None = None
        self._next_due: dict[str, datetime] = {}
        self._outage: str | None = None
        # The leader applies CONVEYOR_RETENTION_DAYS at start, then hourly.
        self.retention = retention
        self._next_retention: float | None = None
        #: The leader makes the partitions of ``jobs`` ahead too (it keeps its own, hourly, pace).
        self.upkeep = upkeep

    @property
    def leading(self) -> bool:
        """Whether this replica was the leader at its last round."""
        return bool(self._leading)

    def run(self, stop: threading.Event) -> None:
        """Run rounds until ``stop`` is set, then release the lock. Outages do not end it."""
        logger.info(
            "scheduler %s: %d entries from %s, namespace %s",
            self.identity,
            len(self.schedule.entries),
            self.schedule.source,
            self.namespace,
        )
        try:
            while not stop.is_set():
                try:
                    wait = self.step()
                except Exception:
                    logger.exception("scheduler round failed; trying again in %g s", ERROR_RETRY)
                    wait = ERROR_RETRY
                stop.wait(wait)
        finally:
            self.lock.release()
            logger.info("scheduler %s stopped", self.identity)

    def step(self, now: datetime | None = None) -> float:
        """One round: hold or seek the lock; as leader, enqueue what is due at ``now``.

        Returns:
            The seconds to sleep before the next round.
        """
        if not self._lead():
            return LOCK_RETRY
        try:
            self._enqueue_due(now or self.clock())
            self._retain(now or self.clock())
            if self.upkeep is not None:
                self.upkeep()
        except ServiceUnavailable as exc:
            if str(exc) != self._outage:
                logger.warning("%s: enqueueing paused, retried every %g s", exc, OUTAGE_RETRY)
                self._outage = str(exc)
            return OUTAGE_RETRY
        if self._outage is not None:
            logger.info("services reachable again: enqueueing resumed")
            self._outage = None
        return self._sleep(self.clock())

    def _retain(self, now: datetime) -> None:
        """Run retention when due: at the first round as leader, then every RETENTION_INTERVAL
        (at once again when a run left more to delete)."""
        if self.retention is None:
            return
        moment = time.monotonic()
        if self._next_retention is not None and moment < self._next_retention:
            return
        run = self.retention.run(now)
        self._next_retention = moment + (0.0 if run.more else RETENTION_INTERVAL)

    def close(self) -> None:
        """Release the lock (when :meth:`run` was not used)."""
        self.lock.release()

    def _lead(self) -> bool:
        leading = self.lock.hold()
        if leading and not self._leading:
            self._next_due.clear()  # another leader may have moved the ticks on: read them again
            self._next_retention = None  # a new leader applies retention at once
            logger.info("leader: replica %s enqueues for namespace %s", self.identity, self.namespace)
        elif not leading and self._leading is not False:
            logger.info(
                "follower: another replica leads namespace %s (or PostgreSQL is unreachable); "
                "trying the lock every %g s",
                self.namespace,
                LOCK_RETRY,
            )
        self._leading = leading
        return leading

    def _enqueue_due(self, now: datetime) -> None:
        if not self.schedule.entries:  # a scheduler run for retention alone
            return
        known = len(self._next_due) == len(self.schedule.entries)
        if known and min(self._next_due.values()) > now:
            return
        last_ticks = self.ticks.last_ticks()
        for entry in self.schedule.entries:
            self._next_due[entry.name] = self._run_entry(entry, last_ticks.get(entry.name), now)

    def _run_entry(self, entry: ScheduleEntry, last: datetime | None, now: datetime) -> datetime:
        """Enqueue the entry's due ticks; returns when its next tick is due."""
        if last is None:
            last = self.ticks.start(entry.name, _previous_tick(entry, now))
            logger.info(
                "entry %s (%s): first seen, starts after %s",
                entry.name,
                entry.timing.describe(),
                utc_iso(last),
            )
        due = due_ticks(entry, last, now)
        if due.skipped:
            where = (
                f"older than {utc_iso(due.ticks[0])}" if due.ticks else f"up to {utc_iso(due.newest or now)}"
            )
            logger.warning(
                "entry %s: missed ticks %s skipped (catch_up = %s, at most %d caught up)",
                entry.name,
                where,
                entry.catch_up.value,
                MAX_CATCH_UP,
            )
        for tick in due.ticks:
            self._enqueue(entry, tick)
            self.ticks.advance(entry.name, tick)
            last = tick
        if due.newest is not None and due.newest > last:
            self.ticks.advance(entry.name, due.newest)
            last = due.newest
        return entry.timing.next_after(last)

    def _enqueue(self, entry: ScheduleEntry, tick: datetime) -> None:
        options = dataclasses.replace(
            entry.options, idempotency_key=entry.idempotency_key(self.namespace, tick)
        )
        try:
            job = self.producer.enqueue_with_options(entry.kind, entry.payload, options)
        except ValueError as exc:
            # Checked at start, so something changed since (a template removed): the tick cannot
            # succeed later either, and must not hold back the entry's next ticks.
            logger.error("entry %s, tick %s: not enqueued, skipped: %s", entry.name, utc_iso(tick), exc)
            return
        logger.info("entry %s, tick %s: enqueued job %s", entry.name, utc_iso(tick), job.id)

    def _sleep(self, now: datetime) -> float:
        if not self._next_due:
            return MAX_SLEEP
        wait = (min(self._next_due.values()) - now).total_seconds()
        return max(0.0, min(wait, MAX_SLEEP))


def _previous_tick(entry: ScheduleEntry, now: datetime) -> datetime:
    """An entry's starting point when first seen: its latest tick up to now (not enqueued)."""
    ticks, _ = entry.timing.latest(_EPOCH, now, 1)
    return ticks[0] if ticks else now
