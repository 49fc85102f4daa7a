"""Delayed middleware: retries and delayed messages wait in PostgreSQL, not in a worker's memory.

``hold`` is the broker's sink for delayed messages (``ConveyorRabbitmqBroker.hold``), and
``before_delay_message`` takes over the ``.DQ`` messages of plain Dramatiq producers. The
dispatcher (``workers/dispatcher.py``) publishes each once it is due.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from jobs.broker import HELD_OPTION, ConveyorRabbitmqBroker
from jobs.middleware.state import InFlightJobs
from jobs.store.delayed import DelayedStore, HeldMessage
from jobs.store.waiting import wait_for_store


class Delayed(Middleware):
    """Stores delayed messages; the retry of a running job goes with that job's end."""

    def __init__(self, delayed: DelayedStore, in_flight: InFlightJobs, stopping: threading.Event) -> None:
        self.delayed = delayed
        self.in_flight = in_flight
        self.stopping = stopping

    def hold(self, message: dramatiq.Message[Any], due_at: datetime) -> None:
        """The broker's sink for delayed messages (see ``ConveyorRabbitmqBroker``).

        The retry of the job this thread runs is kept on its attempt until the attempt's end is
        written, and goes into the same transaction: a retry is never lost, nor acknowledged
        before it is stored (Dramatiq #545). Any other delayed message is stored at once.
        """
        held = HeldMessage.of(message, due_at)
        attempt = self.in_flight.current()
        if attempt is not None and attempt.job_id == message.message_id:
            attempt.retry = held
            return
        self._store(held)

    def before_delay_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        # A plain Dramatiq producer's delayed message reached a ``.DQ``: store it and let Dramatiq
        # acknowledge it now (HELD_OPTION makes its hand-over publish nothing) instead of holding it.
        if not isinstance(broker, ConveyorRabbitmqBroker) or broker.hold is None:
            return
        eta = message.options.get("eta") or 0
        self._store(HeldMessage.of(message, datetime.fromtimestamp(eta / 1000, UTC)))
        message.options[HELD_OPTION] = True
        message.options["eta"] = 0

    def _store(self, held: HeldMessage) -> None:
        wait_for_store(lambda: self.delayed.hold(held), self.stopping)
