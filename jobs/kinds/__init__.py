"""The registry of job kinds. A new kind is one module with a ``KIND`` and one line here (or,
for an application's own kinds, a call to :func:`register`)."""

from __future__ import annotations

from jobs.kinds import email, image, noop, report
from jobs.kinds.base import JobKind

KINDS: dict[str, JobKind] = {kind.name: kind for kind in (email.KIND, image.KIND, noop.KIND, report.KIND)}
ACTOR_KINDS: dict[str, JobKind] = {kind.actor_name: kind for kind in KINDS.values()}


def register(kind: JobKind) -> None:
    """Add an application's own job kind (``conveyor worker --include MODULE`` imports its module).

    Producers that enqueue it must register it too. Raises ``ValueError`` if the kind's name or
    actor name is taken by a different kind.
    """
    for taken, key in ((KINDS, kind.name), (ACTOR_KINDS, kind.actor_name)):
        if key in taken and taken[key] != kind:
            raise ValueError(f"job kind {key!r} is already registered")
    KINDS[kind.name] = kind
    ACTOR_KINDS[kind.actor_name] = kind


def get_kind(name: str) -> JobKind:
    """The kind called ``name``.

    Raises:
        ValueError: no such kind (the message lists the known ones).
    """
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown job kind {name!r}; known kinds: {', '.join(sorted(KINDS))}") from None


__all__ = ["ACTOR_KINDS", "KINDS", "JobKind", "get_kind", "register"]
