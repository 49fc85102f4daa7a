"""The registry of job kinds. A new kind is one module with a ``KIND`` and one line here."""

from __future__ import annotations

from jobs.kinds import email, image, noop, report
from jobs.kinds.base import JobKind

KINDS: dict[str, JobKind] = {kind.name: kind for kind in (email.KIND, image.KIND, noop.KIND, report.KIND)}
ACTOR_KINDS: dict[str, JobKind] = {kind.actor_name: kind for kind in KINDS.values()}


def get_kind(name: str) -> JobKind:
    """The kind called ``name``.

    Raises:
        ValueError: no such kind (the message lists the known ones).
    """
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown job kind {name!r}; known kinds: {', '.join(sorted(KINDS))}") from None


__all__ = ["ACTOR_KINDS", "KINDS", "JobKind", "get_kind"]
