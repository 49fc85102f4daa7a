"""The registry of job kinds. A built-in kind is one module with its functions and one entry here (or,
for an application's own kinds, a call to :func:`register`).

The built-in kinds are listed by their settings alone; their modules (and Pillow, WeasyPrint,
Jinja) are imported on the first validate or run, so that a process loads only what it uses.
"""

from __future__ import annotations

from jobs.defaults import DEFAULT_IMAGE_TIME_LIMIT
from jobs.kinds import noop
from jobs.kinds.base import Deferred, JobKind


def _deferred(module: str, *, artifacts: bool = False, **fields: object) -> JobKind:
    """A kind whose functions live in ``module``, imported on first use."""
    extra = {"artifact_ids": Deferred(module, "artifact_ids")} if artifacts else {}
    return JobKind(
        validate=Deferred(module, "validate"),
        run=Deferred(module, "run"),
        **extra,  # type: ignore[arg-type]
        **fields,  # type: ignore[arg-type]
    )


#: Each kind's settings, and the module whose ``validate``, ``run`` (and ``artifact_ids``) serve it.
_BUILTIN = (
    _deferred(
        "jobs.kinds.email",
        artifacts=True,
        name="email",
        actor_name="send_email",
        queue="email",
        max_retries=5,
        min_backoff=5.0,
        max_backoff=3600.0,
        prefetch=8,
    ),
    _deferred(
        "jobs.kinds.image",
        artifacts=True,
        name="image",
        actor_name="process_image",
        queue="images",
        max_retries=3,
        min_backoff=2.0,
        max_backoff=300.0,
        time_limit=DEFAULT_IMAGE_TIME_LIMIT,
    ),
    noop.KIND,
    _deferred(
        "jobs.kinds.report",
        name="report",
        actor_name="generate_report",
        queue="reports",
        max_retries=3,
        min_backoff=5.0,
        max_backoff=600.0,
        prefetch=1,  # minutes each: a report waits for a free thread in RabbitMQ, not here
    ),
)
KINDS: dict[str, JobKind] = {kind.name: kind for kind in _BUILTIN}
ACTOR_KINDS: dict[str, JobKind] = {kind.actor_name: kind for kind in KINDS.values()}
#: The module of each kind added by :func:`register`.
_REGISTERED_BY: dict[str, str | None] = {}


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
    _REGISTERED_BY[kind.name] = getattr(kind.run, "__module__", None)


def registered_modules() -> list[str]:
    """The modules whose kinds :func:`register` added (a fresh process imports them again)."""
    return sorted({m for name, m in _REGISTERED_BY.items() if m and name in KINDS})


def get_kind(name: str) -> JobKind:
    """The kind called ``name``.

    Raises:
        ValueError: no such kind (the message lists the known ones).
    """
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown job kind {name!r}; known kinds: {', '.join(sorted(KINDS))}") from None


__all__ = ["ACTOR_KINDS", "KINDS", "JobKind", "get_kind", "register", "registered_modules"]
