"""The time partitions of ``jobs`` on PostgreSQL (migration 0017): one a day, and a default one.

Conveyor's job ids are UUIDv7 (``jobs/ids.py``), whose first 48 bits are their creation time, so
``jobs`` is partitioned by ``RANGE (id)``: the partition ``jobs_pYYYYMMDD`` holds the ids made on
that day (UTC). The primary key stays ``id``, so ``ON CONFLICT (id)``, the foreign keys to
``jobs`` and lookups by id work as on a plain table, each lookup visiting one partition.

Ids made elsewhere (a plain Dramatiq ``send`` makes UUIDv4s, whose first bits are random) and the
rows of before the migration are in ``jobs_default``. Retention deletes those row by row; a
day's partition whose rows are all past retention is detached and dropped whole
(:meth:`PartitionStore.drop`): no row-by-row ``DELETE``, no ``VACUUM`` of it, about 1 MB of WAL.

Partitions are made :data:`AHEAD_DAYS` ahead by ``conveyor db upgrade``, by every worker process
(hourly, with its orphan sweep) and by the scheduler's leader. A day whose partition is missing
still takes its jobs: they go to ``jobs_default``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, delete, not_, text, update

from jobs.ids import id_floor
from jobs.store.database import Database
from jobs.store.tables import Attempts, EmailDeliveries, JobKeys, Jobs, Outbox

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

logger = logging.getLogger("conveyor.store")

PREFIX = "jobs_p"
DEFAULT = "jobs_default"
#: Days of partitions made ahead of today.
AHEAD_DAYS = 7
#: Serializes the replicas that make or drop partitions ("cjpt").
_LOCK_ID = 0x636A7074

_LIST_SQL = text(
    "SELECT c.relname, greatest(c.reltuples, 0)::bigint, pg_total_relation_size(c.oid) "
    "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
    "WHERE i.inhparent = 'jobs'::regclass ORDER BY c.relname"
)


@dataclass(frozen=True)
class Partition:
    """One partition of ``jobs``: a day's, or the default one (``day`` None)."""

    name: str
    day: date | None
    #: PostgreSQL's estimate (``reltuples``, as of the last ``ANALYZE``).
    rows: int
    #: With its indexes and TOAST.
    bytes: int

    @property
    def bounds(self) -> tuple[str, str] | None:
        """The ids it holds, ``[low, high)``; None for the default partition."""
        return None if self.day is None else day_bounds(self.day)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "day": self.day.isoformat() if self.day else None,
            "rows": self.rows,
            "bytes": self.bytes,
        }


def partition_name(day: date) -> str:
    return f"{PREFIX}{day:%Y%m%d}"


def day_of(name: str) -> date | None:
    """The day of a partition's name (None: the default partition, or not a day's)."""
    if not name.startswith(PREFIX):
        return None
    try:
        return datetime.strptime(name[len(PREFIX) :], "%Y%m%d").replace(tzinfo=UTC).date()
    except ValueError:
        return None


def is_partition(name: str) -> bool:
    """Whether a table's name is one of ``jobs``' partitions."""
    return name == DEFAULT or day_of(name) is not None


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def day_bounds(day: date) -> tuple[str, str]:
    """The UUIDv7 ids made on ``day`` (UTC): ``[low, high)``."""
    return id_floor(day_start(day)), id_floor(day_start(day + timedelta(days=1)))


def create_day(connection: Connection, day: date) -> bool:
    """Make ``day``'s partition in ``connection``'s transaction, unless it exists, or unless the
    default partition already holds ids of that day (foreign UUIDv4s, once in millions): such a
    day stays in the default partition, and False is returned.

    Returns:
        Whether it was made.
    """
    name = partition_name(day)
    if connection.execute(text("SELECT to_regclass(:name)"), {"name": name}).scalar() is not None:
        return False
    low, high = day_bounds(day)
    taken = connection.execute(
        text(f"SELECT 1 FROM {DEFAULT} WHERE id >= :low AND id < :high LIMIT 1"), {"low": low, "high": high}
    ).first()
    if taken is not None:
        logger.warning(
            "jobs partition %s not made: %s already holds ids of that day; that day's jobs stay there",
            name,
            DEFAULT,
        )
        return False
    connection.execute(text(f"CREATE TABLE {name} PARTITION OF jobs FOR VALUES FROM ('{low}') TO ('{high}')"))
    return True


class PartitionStore:
    """Lists, makes and drops the day partitions of ``jobs`` (PostgreSQL; nothing on SQLite)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def enabled(self) -> bool:
        return self.db.dialect == "postgresql"

    def partitions(self) -> list[Partition]:
        """The partitions, the default one first, then by day.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        if not self.enabled:
            return []
        with self.db.transaction() as connection:
            rows = connection.execute(_LIST_SQL).all()
        found = [Partition(name, day_of(name), int(count), int(size)) for name, count, size in rows]
        return sorted(found, key=lambda p: (p.day is not None, p.day or date.min))

    def ensure(self, today: date, ahead: int = AHEAD_DAYS) -> list[str]:
        """Make the missing partitions from yesterday to ``ahead`` days after ``today``, each in a
        transaction of its own (making one takes a brief exclusive lock of ``jobs``).

        Returns:
            The names of those made.
        """
        if not self.enabled:
            return []
        existing = {p.name for p in self.partitions()}
        days = [today + timedelta(days=offset) for offset in range(-1, ahead + 1)]
        made = []
        for day in (d for d in days if partition_name(d) not in existing):
            with self.db.transaction() as connection:
                connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
                if create_day(connection, day):
                    made.append(partition_name(day))
        if made:
            logger.info("jobs partitions made: %s", ", ".join(made))
        return made


def lock_day(connection: Connection | Session, partition: Partition) -> tuple[str, str]:
    """Take the partition-making lock and lock ``partition`` against writes until the transaction
    ends (reads go on); its ids ``[low, high)``."""
    bounds = _bounds_of(partition)
    connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    connection.execute(text(f"LOCK TABLE {partition.name} IN SHARE ROW EXCLUSIVE MODE"))
    return bounds


def drop_day(connection: Connection | Session, partition: Partition) -> None:
    """Detach and drop ``partition`` (locked by :func:`lock_day` in this transaction), with every
    row that refers to its jobs: attempts, deliveries, outbox entries, idempotency keys; other
    jobs' ``parent_id`` naming them is cleared (PostgreSQL refuses to detach a partition that a
    row refers to). Artifacts are the caller's (they have files)."""
    low, high = _bounds_of(partition)
    for table in (Attempts, EmailDeliveries, Outbox, JobKeys):
        connection.execute(delete(table).where(table.job_id >= low, table.job_id < high))
    outside = not_(and_(Jobs.id >= low, Jobs.id < high))
    connection.execute(
        update(Jobs).where(Jobs.parent_id >= low, Jobs.parent_id < high, outside).values(parent_id=None)
    )
    connection.execute(text(f"ALTER TABLE jobs DETACH PARTITION {partition.name}"))
    connection.execute(text(f"DROP TABLE {partition.name}"))
    logger.info("jobs partition %s dropped", partition.name)


def _bounds_of(partition: Partition) -> tuple[str, str]:
    if partition.bounds is None:
        raise ValueError(f"{partition.name} is not a day's partition")
    return partition.bounds
