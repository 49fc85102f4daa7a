"""Which scheduler replica enqueues: the one holding a PostgreSQL session advisory lock.

The lock lives on a dedicated connection (``jobs.store.schedule.AdvisoryLock``): when that
connection dies, PostgreSQL releases the lock and the replica stops acting as leader at its
next check.
"""

from __future__ import annotations

import hashlib
import logging

from jobs.errors import ServiceUnavailable, SettingsError
from jobs.store import Database
from jobs.store.database import backend_name
from jobs.store.schedule import AdvisoryLock, advisory_lock_holder

logger = logging.getLogger("conveyor.scheduler")

#: The ``application_name`` of a lock's connection starts with this, then the replica's identity.
_APPLICATION = "conveyor-scheduler "


def lock_key(namespace: str) -> int:
    """The advisory-lock key of a namespace's scheduler: a signed 64-bit hash of its name."""
    digest = hashlib.sha256(f"conveyor-scheduler:{namespace}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def require_postgresql(database_url: str) -> None:
    """Raises :class:`SettingsError` unless ``database_url`` is PostgreSQL (advisory locks)."""
    if backend_name(database_url) != "postgresql":
        raise SettingsError("conveyor scheduler needs PostgreSQL: its replicas elect a leader with a lock")


class LeaderLock:
    """The namespace's lock on a connection of its own; one instance per replica and thread."""

    def __init__(self, database_url: str, namespace: str, identity: str) -> None:
        require_postgresql(database_url)
        self.key = lock_key(namespace)
        self.identity = identity
        self._lock = AdvisoryLock(database_url, self.key, f"{_APPLICATION}{identity}")
        self.held = False

    def hold(self) -> bool:
        """Whether this replica leads now: checks a held lock's connection, else tries to take it.

        Never raises for a database outage: an unreachable database means not leading.
        """
        try:
            if self.held:
                self._lock.check()
            else:
                self.held = self._lock.try_acquire()
        except ServiceUnavailable as exc:
            if self.held:
                logger.warning("leader lock lost with its connection: %s", exc.reason)
            self.held = False
        return self.held

    def release(self) -> None:
        """Let another replica lead (closing the connection releases the lock), and clean up."""
        held, self.held = self.held, False
        self._lock.release(unlock=held)


def current_leader(db: Database, namespace: str) -> str | None:
    """The identity (``host:pid:…``) of the replica holding the namespace's lock, if any."""
    name = advisory_lock_holder(db, lock_key(namespace))
    if name is None:
        return None
    return name.removeprefix(_APPLICATION) or None
