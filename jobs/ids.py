"""Job and artifact ids are UUIDs in text form."""

from __future__ import annotations

import uuid


def is_uuid(value: object) -> bool:
    """Whether ``value`` is a UUID in any of the usual text forms."""
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
