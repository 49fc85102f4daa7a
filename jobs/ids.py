"""Job and artifact ids are UUIDs in text form.

Conveyor makes its job ids as UUIDv7 (RFC 9562): the first 48 bits are the creation time in
milliseconds, so ids sort by time and ``jobs`` is partitioned by ranges of them on PostgreSQL
(``jobs/store/partitions.py``). Ids made elsewhere (a plain Dramatiq ``send``: UUIDv4) are valid
job ids too; their rows go to the ``DEFAULT`` partition.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime

_VERSION_7 = 0x7 << 76
_VARIANT = 0x2 << 62
_RANDOM_A = (1 << 12) - 1  # the 12 bits after the version
_RANDOM_B = (1 << 62) - 1  # the 62 bits after the variant


def is_uuid(value: object) -> bool:
    """Whether ``value`` is a UUID in any of the usual text forms."""
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def new_job_id(at: datetime | None = None) -> str:
    """A UUIDv7 of the current time (or of ``at``): 48 bits of Unix milliseconds, then 74 random bits."""
    milliseconds = time.time_ns() // 1_000_000 if at is None else _milliseconds(at)
    return _uuid7(milliseconds, os.urandom(10))


def new_job_ids(count: int) -> list[str]:
    """``count`` UUIDv7 of the current time, their random bits read from the OS in one call
    (a call per id was a tenth of ``enqueue_many``'s CPU)."""
    milliseconds = time.time_ns() // 1_000_000
    random = os.urandom(10 * count)
    return [_uuid7(milliseconds, random[start : start + 10]) for start in range(0, 10 * count, 10)]


def _uuid7(milliseconds: int, random_bytes: bytes) -> str:
    """The UUIDv7 of ``milliseconds`` and 10 random bytes (74 of their bits kept), in text form:
    what ``str(uuid.UUID(int=...))`` gives, without building the object."""
    random = int.from_bytes(random_bytes, "big")
    value = (
        milliseconds << 80 | _VERSION_7 | ((random >> 62) & _RANDOM_A) << 64 | _VARIANT | (random & _RANDOM_B)
    )
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def id_floor(moment: datetime) -> str:
    """The smallest UUID whose first 48 bits are ``moment`` in Unix milliseconds: every UUIDv7
    made at or after ``moment`` sorts at or above it, every one made before sorts below."""
    return str(uuid.UUID(int=_milliseconds(moment) << 80))


def _milliseconds(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 1000)


def id_time(value: str) -> datetime | None:
    """When a UUIDv7 job id was made; None for any other UUID (a UUIDv4's first bits are random)."""
    parsed = uuid.UUID(str(value))
    if parsed.version != 7:
        return None
    return datetime.fromtimestamp((parsed.int >> 80) / 1000, UTC)
