"""What a job kind is: its actor, its queue, its retry defaults, its payload rules."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.settings import Settings

Payload = dict[str, Any]
Result = dict[str, Any]


@dataclass(frozen=True)
class JobKind:
    """A kind of job (SPEC §1): ``email``, ``report``, ``image``, ``noop``."""

    name: str
    actor_name: str
    #: Queue name without the namespace: ``email`` becomes ``<ns>.email``.
    queue: str
    max_retries: int
    #: Seconds: the first retry waits between ``min_backoff`` and twice that, doubling each time.
    min_backoff: float
    #: Seconds: no retry waits longer.
    max_backoff: float
    #: Checks and normalises a payload; raises ``ValueError`` with a clear message.
    validate: Callable[[Mapping[str, Any], Settings], Payload]
    #: The job's code: ``run(services, **payload)`` in the worker; returns the job's result.
    run: Callable[..., Result]
    #: The artifacts a payload refers to, which must exist when it is enqueued.
    artifact_ids: Callable[[Payload], list[str]] = lambda _payload: []
    #: Seconds one attempt may run before it is stopped and failed for good (``None``: Dramatiq's 10 min).
    time_limit: float | None = None
    #: Messages a worker process takes ahead from this kind's queue, per thread (its RabbitMQ
    #: prefetch is this times its threads). A message is acknowledged only once its outcome is
    #: stored, so short jobs need a deep window to keep every thread busy; a long job's should be
    #: small, so that one process does not hold messages other replicas could run, and none
    #: waits past RabbitMQ's consumer timeout. ``CONVEYOR_PREFETCH`` overrides it for all.
    prefetch: int = 2


class Deferred:
    """A module's function, imported on its first call.

    The registry lists every kind without importing its module, so that a process loads only
    the kinds it runs (a no-op worker never loads Pillow, WeasyPrint or the email templates).
    """

    __slots__ = ("_function", "attribute", "module")

    def __init__(self, module: str, attribute: str) -> None:
        self.module = module
        self.attribute = attribute
        self._function: Callable[..., Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        function = self._function
        if function is None:
            function = self._function = getattr(importlib.import_module(self.module), self.attribute)
        return function(*args, **kwargs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Deferred):
            return NotImplemented
        return (self.module, self.attribute) == (other.module, other.attribute)

    def __hash__(self) -> int:
        return hash((self.module, self.attribute))

    def __repr__(self) -> str:
        return f"Deferred({self.module}:{self.attribute})"


def require_keys(kind: str, payload: Mapping[str, Any], allowed: set[str]) -> None:
    """Reject keys a kind does not know, naming them (a typo must not be ignored)."""
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise ValueError(
            f"{kind} payload: unknown field(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed)) or 'none'}"
        )


def as_number(kind: str, key: str, value: Any, *, low: float, high: float) -> float:
    """``value`` as a float within ``[low, high]``, or a ``ValueError`` naming the field."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{kind} payload: {key} must be a number, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{kind} payload: {key}={value} must be between {low:g} and {high:g}")
    return float(value)
