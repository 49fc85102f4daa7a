"""Conveyor's Dramatiq middleware, one concern per module (their order: ``workers.runtime``)."""

from jobs.middleware.delayed import Delayed
from jobs.middleware.inflight import InFlight
from jobs.middleware.lifecycle import Lifecycle
from jobs.middleware.lostruns import LostRuns
from jobs.middleware.recording import Recording
from jobs.middleware.settle import Settle
from jobs.middleware.takeover import TakeOver

__all__ = ["Delayed", "InFlight", "Lifecycle", "LostRuns", "Recording", "Settle", "TakeOver"]
