"""Recording admin actions in the audit log: who (an :class:`Actor`), what, when, which jobs.

Every state-changing action of the CLI, the web dashboard and the scheduler's retention goes
through :meth:`Auditor.action` (or :meth:`Auditor.record`), so that each writes exactly one row,
also when it stops part-way (``outcome = "error"``). Read-only commands write nothing.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobs.logs import mask_secrets
from jobs.store import Database
from jobs.store.audit import AuditEntry, AuditStore

#: Where an action came from.
SOURCES = ("cli", "web", "scheduler")


@dataclass(frozen=True)
class Actor:
    """Who acts: the OS user and host for the CLI, the signed-in user for the web dashboard."""

    source: str
    name: str
    host: str

    @classmethod
    def cli(cls) -> Actor:
        """The user running ``conveyor`` on this host."""
        return cls("cli", _os_user(), socket.gethostname())

    @classmethod
    def web(cls, user: str, remote_host: str) -> Actor:
        """A dashboard user (``remote_host``: the client's address)."""
        return cls("web", user, remote_host)

    @classmethod
    def scheduler(cls, identity: str) -> Actor:
        """A scheduler replica (``host:pid:…``)."""
        return cls("scheduler", identity, socket.gethostname())


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's random uid)
        return "unknown"


@dataclass
class ActionRecord:
    """What an action fills in while it runs; written as one row when it ends."""

    count: int | None = None
    job_ids: list[str] | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Auditor:
    """Writes the audit rows of one namespace for one actor."""

    def __init__(self, db: Database, namespace: str, actor: Actor) -> None:
        self.store = AuditStore(db)
        self.namespace = namespace
        self.actor = actor

    @contextmanager
    def action(
        self,
        name: str,
        *,
        job_ids: Sequence[str] | None = None,
        selection: dict[str, Any] | None = None,
    ) -> Iterator[ActionRecord]:
        """A block doing one action; its row is written when the block ends, with ``outcome``
        ``ok``, or ``error`` and the error's message when it raised (the error goes on).

        ``job_ids``: the jobs named by the admin; ``selection``: the filter that chose them.
        The block sets ``record.count`` (how many were acted on), and may set ``record.job_ids``
        and ``record.details``.
        """
        record = ActionRecord(job_ids=list(job_ids) if job_ids is not None else None)
        try:
            yield record
        except BaseException as exc:
            if not isinstance(exc, Exception):  # Ctrl-C part-way is worth a row too
                record.details["interrupted"] = type(exc).__name__
            else:
                record.details["error"] = mask_secrets(f"{type(exc).__name__}: {exc}")[:1000]
            self._write(name, record, selection, "error")
            raise
        self._write(name, record, selection, "ok")

    def record(
        self,
        name: str,
        *,
        count: int | None = None,
        job_ids: Sequence[str] | None = None,
        selection: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Write the row of an action already done."""
        record = ActionRecord(count, list(job_ids) if job_ids is not None else None, dict(details or {}))
        return self._write(name, record, selection, "ok")

    def _write(
        self, name: str, record: ActionRecord, selection: dict[str, Any] | None, outcome: str
    ) -> AuditEntry:
        return self.store.append(
            AuditEntry(
                namespace=self.namespace,
                source=self.actor.source,
                actor=self.actor.name,
                host=self.actor.host,
                action=name,
                outcome=outcome,
                count=record.count,
                job_ids=record.job_ids,
                selection={k: _plain(v) for k, v in selection.items() if v not in (None, (), [])}
                if selection
                else None,
                details=record.details or None,
            )
        )

    def entries(
        self, *, since: datetime | None = None, action: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """The namespace's rows, newest first."""
        return self.store.find(self.namespace, since=since, action=action, limit=limit)


def _plain(value: Any) -> Any:
    """A JSON-ready value (datetimes as ISO 8601, tuples as lists)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value
