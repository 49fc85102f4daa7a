"""Dead letters grouped by error fingerprint (see :mod:`jobs.admin.fingerprint`): what died of
the same error, how many, since when, and one sample of the error as it was recorded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jobs.admin.dlq import DeadLetter
from jobs.admin.fingerprint import Fingerprint

#: Sorts a dead letter of unknown age before all others.
_EARLIEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class DeadGroup:
    """The dead letters of one fingerprint, at the moment they were listed."""

    fingerprint: Fingerprint
    letters: tuple[DeadLetter, ...]

    @property
    def first_seen(self) -> datetime | None:
        moments = [letter.dead_since for letter in self.letters if letter.dead_since]
        return min(moments) if moments else None

    @property
    def last_seen(self) -> datetime | None:
        moments = [letter.dead_since for letter in self.letters if letter.dead_since]
        return max(moments) if moments else None

    @property
    def sample(self) -> str:
        """The newest member's error as recorded (or why it is foreign): unmasked."""
        newest = max(self.letters, key=lambda letter: letter.dead_since or _EARLIEST)
        return newest.error or (f"foreign: {newest.reason}" if newest.reason else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``fingerprint`` is the key the group's requeue and purge take."""
        return {
            "fingerprint": self.fingerprint.key,
            "kind": self.fingerprint.kind,
            "error_type": self.fingerprint.error_type,
            "message": self.fingerprint.message,
            "count": len(self.letters),
            "first_seen": self.first_seen.isoformat() if self.first_seen else None,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "queues": sorted({letter.queue for letter in self.letters}),
            "sample": self.sample,
            "ids": [letter.id for letter in self.letters],
        }


def group_dead(letters: Sequence[DeadLetter]) -> list[DeadGroup]:
    """``letters`` by fingerprint: the largest group first, then the most recently seen."""
    groups: dict[Fingerprint, list[DeadLetter]] = {}
    for letter in letters:
        groups.setdefault(letter.fingerprint, []).append(letter)
    found = [DeadGroup(fingerprint, tuple(members)) for fingerprint, members in groups.items()]
    found.sort(key=lambda group: group.last_seen.timestamp() if group.last_seen else 0.0, reverse=True)
    found.sort(key=lambda group: len(group.letters), reverse=True)  # stable: newest first within a size
    return found
