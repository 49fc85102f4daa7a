"""Stale deliveries middleware: a message whose channel closed is not run (RabbitMQ redelivers it).

See ``jobs/consumer.py``: after a connection loss, the worker's local queue still holds
messages the old channel delivered, and RabbitMQ has already put them back in line. Running
them would run each job twice; skipping them loses nothing, as their acknowledgement is dropped
and the redelivered copy runs.
"""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage

from jobs.consumer import is_stale

logger = logging.getLogger("conveyor.consumer")


class StaleDeliveries(Middleware):
    """Skips a message delivered on a channel that has closed since."""

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if is_stale(message):
            logger.info(
                "message %s: its channel closed before it ran; RabbitMQ delivers it again", message.message_id
            )
            raise SkipMessage("delivered on a channel that has closed")
