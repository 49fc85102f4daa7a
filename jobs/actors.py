"""Declare one Dramatiq actor per job kind on a given broker (explicitly, never at import)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import dramatiq
from dramatiq.middleware import TimeLimitExceeded

from jobs.context import current_job
from jobs.errors import JobCancelled, PermanentError
from jobs.kinds import KINDS, JobKind
from jobs.services import Services


def declare_actors(
    broker: dramatiq.Broker, services: Services, kinds: Iterable[JobKind] | None = None
) -> dict[str, dramatiq.Actor[Any, Any]]:
    """Register every kind's actor on ``broker``, on its namespaced queue.

    Returns:
        The actors by kind name.

    Raises:
        ValueError: an actor option that no middleware on the broker understands.
    """
    actors = {}
    for kind in kinds if kinds is not None else KINDS.values():
        options: dict[str, Any] = {
            "max_retries": kind.max_retries,
            "min_backoff": int(kind.min_backoff * 1000),
            "max_backoff": int(kind.max_backoff * 1000),
            "throws": (PermanentError,),
        }
        if kind.time_limit is not None:
            options["time_limit"] = int(kind.time_limit * 1000)
            # An image that takes too long will take too long again: fail it, do not retry.
            options["throws"] = (PermanentError, TimeLimitExceeded)
        unknown = set(options) - broker.actor_options
        if unknown:
            raise ValueError(f"actor {kind.actor_name}: no middleware understands {sorted(unknown)}")
        actors[kind.name] = dramatiq.Actor(
            job_function(kind, services),
            broker=broker,
            actor_name=kind.actor_name,
            queue_name=services.settings.queue_name(kind.queue),
            priority=0,
            options=options,
        )
    return actors


def job_function(kind: JobKind, services: Services) -> Callable[..., None]:
    """The function Dramatiq calls: checks the payload, runs the kind, hands the result over.

    The result goes to the lifecycle middleware through the job context rather than
    as a return value, so that no result backend is needed.
    """

    def run_job(*args: Any, **payload: Any) -> None:
        if args:
            raise PermanentError(
                f"{kind.actor_name} takes keyword arguments only; got {len(args)} positional argument(s)"
            )
        try:
            clean = kind.validate(payload, services.settings)
        except ValueError as exc:
            raise PermanentError(f"invalid payload: {exc}") from None
        ctx = current_job()
        try:
            result = kind.run(services, **clean)
        except JobCancelled:
            # Not a failure: acknowledged, recorded as cancelled, never retried or dead-lettered.
            if ctx is None:
                raise
            ctx.cancelled = True
            return
        if ctx is not None:
            ctx.result = result

    run_job.__name__ = run_job.__qualname__ = kind.actor_name
    return run_job
