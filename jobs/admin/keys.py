"""``conveyor keys``: the encryption keys at rest — a new key, where each key is used, rotation.

Rotation re-seals every stored value and artifact file under the current key (the first of
``CONVEYOR_ENCRYPTION_KEYS``), values stored in the clear included. Before it runs, every
process must hold the new key first and the old ones after it; once it has finished (and
``keys status`` counts nothing under an old key), the old key can be removed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from jobs.crypto import generate_key
from jobs.errors import SettingsError
from jobs.store.database import Database
from jobs.store.rekey import FILES, PLAINTEXT, SEALED, SUBJECTS, KeyStore, OnBatch, TableRotation
from jobs.subjects import SUBJECT_PURPOSE, SubjectHasher

__all__ = ["PLAINTEXT", "KeyAdmin", "KeyStatus", "Rotation", "generate_key"]


@dataclass(frozen=True)
class KeyStatus:
    """Stored values per key id (and in the clear), per table and column."""

    current: str | None
    configured: tuple[str, ...]
    columns: dict[str, dict[str, int]]

    def totals(self) -> dict[str, int]:
        """Values per key id (and ``plaintext``) over every column and the files."""
        totals: dict[str, int] = {}
        for counts in self.columns.values():
            for kid, n in counts.items():
                totals[kid] = totals.get(kid, 0) + n
        return totals

    def unknown(self) -> list[str]:
        """Key ids found in the store that the configured keys do not hold (values unreadable)."""
        return sorted(k for k in self.totals() if k != PLAINTEXT and k not in self.configured)

    def retirable(self) -> list[str]:
        """Configured keys, apart from the current one, that seal nothing any more."""
        used = self.totals()
        return [k for k in self.configured[1:] if not used.get(k)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "configured": list(self.configured),
            "totals": self.totals(),
            "columns": self.columns,
            "unknown_keys": self.unknown(),
            "retirable_keys": self.retirable(),
        }


@dataclass
class Rotation:
    """What ``keys rotate`` did, per table (and ``artifact_files``)."""

    current: str
    tables: dict[str, TableRotation] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def resealed(self) -> int:
        return sum(sum(t.resealed.values()) for t in self.tables.values())

    @property
    def raced(self) -> int:
        return sum(t.raced for t in self.tables.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "resealed": self.resealed,
            "raced": self.raced,
            "seconds": round(self.seconds, 3),
            "tables": {name: t.to_dict() for name, t in self.tables.items()},
        }


class KeyAdmin:
    """Key status and rotation over one store."""

    def __init__(self, db: Database) -> None:
        self.store = KeyStore(db)

    def _keys(self) -> tuple[str, ...]:
        keyring = self.store.sealer.keyring
        return () if keyring is None else tuple(key.id for key in keyring.keys)

    def status(self) -> KeyStatus:
        """Counts of stored values per key id.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        return KeyStatus(self.store.sealer.current_id, self._keys(), self.store.status())

    def row_counts(self) -> dict[str, int]:
        """Rows per table a rotation walks (for a progress bar)."""
        return self.store.row_counts()

    def rotate(self, on_batch: OnBatch | None = None) -> Rotation:
        """Re-seal every stored value and artifact file not under the current key.

        Safe to interrupt and run again (what is under the current key is skipped), and beside
        running workers (each value is replaced only if unchanged since it was read).

        Raises:
            SettingsError: ``CONVEYOR_ENCRYPTION_KEYS`` is not set.
            UnknownKey: a value is sealed with a key that is not configured.
            ServiceUnavailable: the database cannot be reached.
        """
        current = self.store.sealer.current_id
        if current is None:
            raise SettingsError("keys rotate needs CONVEYOR_ENCRYPTION_KEYS (the new key first)")
        started = time.monotonic()
        rotation = Rotation(current)
        for table in SEALED:
            rotation.tables[table.name] = self.store.rotate_table(table, on_batch)
        rotation.tables[FILES] = self.store.rotate_files(on_batch)
        keyring = self.store.sealer.keyring
        assert keyring is not None  # a current key exists
        hasher = SubjectHasher(tuple(key.derive(SUBJECT_PURPOSE) for key in keyring.keys))
        rotation.tables[SUBJECTS] = self.store.rehash_subjects(hasher, on_batch)
        rotation.seconds = time.monotonic() - started
        return rotation
