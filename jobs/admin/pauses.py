"""Pausing and resuming a queue (``conveyor queues pause|resume``, the dashboard's buttons).

A pause is a row in ``queue_pauses`` (``jobs/store/pauses.py``); every worker process reads the
paused set about once a second and stops fetching from those queues (``workers/pauses.py``).
The queue's messages stay in RabbitMQ, ready, until it is resumed. Both actions are audited
(``queues.pause``, ``queues.resume``), also when they change nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from jobs.admin.audit import Auditor
from jobs.errors import UnknownQueue
from jobs.kinds import KINDS
from jobs.settings import Settings
from jobs.store import Database
from jobs.store.pauses import QueuePause, QueuePauseStore


@dataclass(frozen=True)
class PauseOutcome:
    """What a pause or resume did: ``changed`` is False when the queue already was so."""

    queue: str
    paused: bool
    changed: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def known_queues(settings: Settings) -> dict[str, str]:
    """Every name a queue may be given by (``email``, the kind ``image``, ``conveyor.email``) →
    its full name."""
    names = {settings.queue_name(kind.queue): settings.queue_name(kind.queue) for kind in KINDS.values()}
    names.update({kind.queue: settings.queue_name(kind.queue) for kind in KINDS.values()})
    names.update({name: settings.queue_name(kind.queue) for name, kind in KINDS.items()})
    return names


def resolve_queue(settings: Settings, name: str) -> str:
    """The full name of the queue ``name`` means (short or full).

    Raises:
        UnknownQueue: no job kind uses such a queue.
    """
    names = known_queues(settings)
    queue = names.get(name.strip())
    if queue is None:
        known = ", ".join(sorted({full.removeprefix(settings.namespace + ".") for full in names.values()}))
        raise UnknownQueue(f"unknown queue {name!r}; known queues: {known}")
    return queue


def pause_queue(settings: Settings, db: Database, auditor: Auditor, name: str) -> PauseOutcome:
    """Pause a queue of ``settings``' namespace, audited as ``queues.pause``.

    Raises:
        UnknownQueue: no job kind uses such a queue.
        ServiceUnavailable: the database cannot be reached.
    """
    actor = auditor.actor
    return _set_paused(settings, db, auditor, name, by=f"{actor.source}:{actor.name}@{actor.host}")


def resume_queue(settings: Settings, db: Database, auditor: Auditor, name: str) -> PauseOutcome:
    """Resume a paused queue, audited as ``queues.resume``.

    Raises:
        UnknownQueue: no job kind uses such a queue.
        ServiceUnavailable: the database cannot be reached.
    """
    return _set_paused(settings, db, auditor, name, by=None)


def _set_paused(
    settings: Settings, db: Database, auditor: Auditor, name: str, *, by: str | None
) -> PauseOutcome:
    """Pause the queue (``by``: who, as the row keeps it) or resume it (``by`` None), audited."""
    queue = resolve_queue(settings, name)
    pausing = by is not None
    with auditor.action("queues.pause" if pausing else "queues.resume", selection={"queue": queue}) as record:
        store = QueuePauseStore(db, settings.namespace)
        changed = store.pause(queue, by) if by is not None else store.resume(queue)
        record.count = 1 if changed else 0
        record.details["changed"] = changed
    if pausing:
        message = (
            f"{queue} paused: workers stop fetching its messages within about a second"
            if changed
            else f"{queue} was paused already"
        )
    else:
        message = (
            f"{queue} resumed: workers fetch its messages again within about a second"
            if changed
            else f"{queue} was not paused"
        )
    return PauseOutcome(queue, paused=pausing, changed=changed, message=message)


def paused_queues(settings: Settings, db: Database) -> dict[str, QueuePause]:
    """Full queue name → its pause, for the paused queues of the namespace.

    Raises:
        ServiceUnavailable: the database cannot be reached.
    """
    return QueuePauseStore(db, settings.namespace).paused()
