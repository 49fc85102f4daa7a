"""Dead letters grouped by error fingerprint (see :mod:`jobs.fingerprint`): what died of the same
error, how many, since when, and one sample of the error as it was recorded.

Two readings of the same groups:

- :func:`dead_view`, the dashboard's: from the job rows. The worker that dead-letters a job
  stores its fingerprint's key on the row (``jobs.dead_fingerprint``); requeue and purge clear
  it. The rows are grouped and counted in one indexed read, and RabbitMQ is asked only how many
  messages its dead-letter queues hold (a passive declare each), so that the page shows any
  difference: messages without a job row (a plain Dramatiq producer's, or dead-lettered before
  the migration that added the mark), or marks whose message left the queue another way.
- :func:`group_dead`, on the messages themselves (``conveyor dlq list``, the dashboard's exact
  view): every message is read from RabbitMQ and joined with its row.

A message's group is the key its row keeps when it has one, so both readings put it in the same
group, and the group actions (which match the messages present when they run) act on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL

from jobs.admin.dlq import DeadLetter, dead_counts, dead_letter_queues
from jobs.errors import ServiceUnavailable
from jobs.fingerprint import Fingerprint, fingerprint
from jobs.kinds import KINDS
from jobs.settings import Settings
from jobs.store.database import Database
from jobs.store.dead_letters import DeadJobStore, MarkedGroup, MarkedJob

#: Sorts a dead letter of unknown age before all others.
_EARLIEST = datetime.min.replace(tzinfo=UTC)
#: RabbitMQ drops a dead letter this long after it arrived (Dramatiq's ``x-message-ttl`` of
#: every ``.XQ``): an older mark has no message behind it any more.
DEAD_LETTER_LIFETIME = timedelta(milliseconds=DEAD_MESSAGE_TTL)


@dataclass(frozen=True)
class DeadGroup:
    """The dead letters of one fingerprint, at the moment they were read."""

    key: str
    #: What its newest member's error shows of the group (kind, exception type, message).
    shown: Fingerprint
    ids: tuple[str, ...]
    first_seen: datetime | None
    last_seen: datetime | None
    queues: tuple[str, ...]
    #: The newest member's error as recorded (or why it is foreign): unmasked.
    sample: str

    @property
    def count(self) -> int:
        return len(self.ids)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``fingerprint`` is the key the group's requeue and purge take."""
        return {
            "fingerprint": self.key,
            "kind": self.shown.kind,
            "error_type": self.shown.error_type,
            "message": self.shown.message,
            "count": self.count,
            "first_seen": self.first_seen.isoformat() if self.first_seen else None,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "queues": list(self.queues),
            "sample": self.sample,
            "ids": list(self.ids),
        }


def _ordered(groups: list[DeadGroup]) -> list[DeadGroup]:
    """The largest group first, then the most recently seen."""
    groups.sort(key=lambda group: group.last_seen.timestamp() if group.last_seen else 0.0, reverse=True)
    groups.sort(key=lambda group: group.count, reverse=True)  # stable: newest first within a size
    return groups


def group_dead(letters: Sequence[DeadLetter]) -> list[DeadGroup]:
    """``letters`` (read from RabbitMQ) by group key: the largest group first, then the newest."""
    members: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        members.setdefault(letter.key, []).append(letter)
    found = []
    for key, group in members.items():
        moments = [letter.dead_since for letter in group if letter.dead_since]
        newest = max(group, key=lambda letter: letter.dead_since or _EARLIEST)
        sample = newest.error or (f"foreign: {newest.reason}" if newest.reason else "")
        queues = tuple(sorted({letter.queue for letter in group}))
        ids = tuple(letter.id for letter in group)
        first, last = (min(moments), max(moments)) if moments else (None, None)
        found.append(DeadGroup(key, newest.fingerprint, ids, first, last, queues, sample))
    return _ordered(found)


def group_marked(marked: Sequence[MarkedGroup]) -> list[DeadGroup]:
    """The groups of the rows marked as dead-lettered: the largest first, then the newest."""
    found = []
    for group in marked:
        sample = group.error or ""
        shown = fingerprint(group.kind, sample)
        found.append(DeadGroup(group.group, shown, group.ids, group.first, group.last, group.queues, sample))
    return _ordered(found)


@dataclass(frozen=True)
class DeadView:
    """The dashboard's dead letters: groups and letters from the job rows, and RabbitMQ's count."""

    groups: list[DeadGroup]
    #: The newest dead letters, at most as many as asked for.
    letters: list[DeadLetter]
    #: Dead letters the job rows account for (every group's members).
    letters_total: int
    #: Messages in the dead-letter queues per RabbitMQ now; None when it cannot be reached.
    in_queues: int | None
    #: ``rows`` (the job rows, RabbitMQ counted) or ``queues`` (every message read).
    source: str = "rows"
    #: The services that could not be read, with why (``rabbitmq``: the count is missing).
    unavailable: dict[str, str] = field(default_factory=dict)


def dead_view(settings: Settings, db: Database, queue: str | None, shown: int) -> DeadView:
    """The dead letters of the job rows marked as dead-lettered in the selected queues, the
    newest ``shown`` of them as letters, and how many messages RabbitMQ holds there.

    Raises:
        ServiceUnavailable: the database cannot be reached.
        ValueError: an unknown ``queue``.
    """
    queues = dead_letter_queues(settings, queue)
    store = DeadJobStore(db)
    since = datetime.now(UTC) - DEAD_LETTER_LIFETIME
    groups = group_marked(store.marked_groups(queues, since))
    letters = [_letter(row) for row in store.marked(queues, since, shown)]
    total = sum(group.count for group in groups)
    try:
        in_queues = sum(dead_counts(settings, queue).values())
    except ServiceUnavailable as exc:
        return DeadView(groups, letters, total, None, unavailable={"rabbitmq": str(exc)})
    return DeadView(groups, letters, total, in_queues)


def _letter(row: MarkedJob) -> DeadLetter:
    kind = KINDS.get(row.kind)
    return DeadLetter(
        row.id,
        row.queue,
        kind=row.kind,
        job_id=row.id,
        actor=kind.actor_name if kind else None,
        status=row.status,
        dead_since=row.finished_at,
        attempts=row.attempts,
        error=row.error,
        stored_key=row.group,
    )
