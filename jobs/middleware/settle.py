"""Settle middleware: a stopping consumer waits for the ends still being written.

The worker threads have stopped when a consumer thread shuts down, but the ends of their last
jobs may still be on their way to the store, and each message is acknowledged only once its end
lands (``jobs.consumer.ack_after``). Closing the channel first would make RabbitMQ deliver
those messages again; so the consumer waits for them, up to :data:`SETTLE_TIMEOUT`.
"""

from __future__ import annotations

from concurrent.futures import wait as wait_for_futures
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from jobs.middleware.state import InFlightJobs

#: Seconds a stopping consumer waits for the ends still being written, to acknowledge their messages.
SETTLE_TIMEOUT = 10.0


class Settle(Middleware):
    """Lets the ends being written land before a consumer closes its channel."""

    def __init__(self, in_flight: InFlightJobs, timeout: float = SETTLE_TIMEOUT) -> None:
        self.in_flight = in_flight
        self.timeout = timeout

    def before_consumer_thread_shutdown(self, broker: dramatiq.Broker, thread: Any) -> None:
        pending = self.in_flight.pending_ends()
        if pending:
            wait_for_futures(pending, timeout=self.timeout)
