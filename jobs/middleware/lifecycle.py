"""A job's lifecycle in the store: the middleware that record it, built together over one store.

Each concern is a middleware of its own (see ``jobs/middleware/``); :class:`Lifecycle` builds
them around one :class:`~jobs.middleware.state.InFlightJobs` and hands them to
``workers.runtime.worker_middleware``, which places each where its hooks must run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from jobs.defaults import DEFAULT_RUNNING_AFTER
from jobs.kinds import ACTOR_KINDS, JobKind
from jobs.middleware.delayed import Delayed
from jobs.middleware.inflight import InFlight
from jobs.middleware.lostruns import LostRuns
from jobs.middleware.promote import Promote
from jobs.middleware.recording import RECHECKS_OPTION, Recording, describe_error
from jobs.middleware.settle import SETTLE_TIMEOUT, Settle
from jobs.middleware.state import InFlightJobs
from jobs.middleware.takeover import TakeOver
from jobs.store import AttemptStore, WorkerIdentity
from jobs.store.delayed import DelayedStore

# Re-exported: code that imports these names from this module keeps working.
__all__ = ["RECHECKS_OPTION", "SETTLE_TIMEOUT", "Lifecycle", "describe_error"]


@dataclass(frozen=True)
class Lifecycle:
    """The job middleware of one worker process, sharing the attempt store and the in-flight jobs."""

    attempts: AttemptStore
    in_flight: InFlight
    recording: Recording
    take_over: TakeOver
    lost_runs: LostRuns
    delayed: Delayed
    settle: Settle
    promote: Promote

    @classmethod
    def build(
        cls,
        attempts: AttemptStore,
        identity: WorkerIdentity,
        *,
        kinds: Mapping[str, JobKind] = ACTOR_KINDS,
        stopping: threading.Event | None = None,
        alive: Callable[[str], bool | None] = lambda worker_id: None,
        recheck_after: float = 5.0,
        max_payload_bytes: int | None = None,
        running_after: float = DEFAULT_RUNNING_AFTER,
    ) -> Lifecycle:
        """``alive`` tells whether a worker (by id) is alive, None when unknown; ``recheck_after``
        is how many seconds at most a copy of a running job's message waits before another look;
        ``max_payload_bytes`` the payload cap a message of another producer is held to;
        ``running_after`` how long a claimed job runs before its start is written."""
        stopping = stopping or threading.Event()
        jobs = InFlightJobs()
        delayed = DelayedStore(attempts.db)
        return cls(
            attempts=attempts,
            in_flight=InFlight(attempts, jobs),
            recording=Recording(
                attempts, identity, jobs, kinds=kinds, stopping=stopping, max_payload_bytes=max_payload_bytes
            ),
            take_over=TakeOver(
                attempts,
                delayed,
                identity,
                jobs,
                alive=alive,
                recheck_after=recheck_after,
                stopping=stopping,
            ),
            lost_runs=LostRuns(),
            delayed=Delayed(delayed, jobs, stopping),
            settle=Settle(jobs),
            promote=Promote(attempts, jobs, running_after),
        )
