"""Metrics middleware: observes each attempt for Prometheus (``jobs/metrics.py``).

Placed just before ``InFlight`` and ``Recording``: Dramatiq runs ``after_*`` hooks in reverse
order, so this one sees an attempt after the recorder has handed its end over, with the
outcome recorded (:attr:`~jobs.middleware.state.Attempt.outcome`). It counts only attempts
whose end was recorded, as the store has them: an attempt's row and its count agree.

The queue wait runs from the message's enqueue time, or from its due time when it was held
(a delayed job, a retry: ``DUE_OPTION``), to the attempt's start, so a deliberate delay is
not counted as latency.
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq
from dramatiq.common import q_name
from dramatiq.middleware import Middleware

from jobs import metrics
from jobs.kinds import ACTOR_KINDS
from jobs.middleware.state import attempt_of
from jobs.store.delayed import DUE_OPTION

#: The attribute of a message this middleware counted as in progress: (queue, kind).
_COUNTED = "conveyor_metrics_counted"


class Metrics(Middleware):
    """Feeds the attempt families: finished attempts, run time, queue wait, jobs in progress."""

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        metrics.worker_threads(worker.worker_threads)

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        kind = ACTOR_KINDS.get(message.actor_name)
        labels = (q_name(message.queue_name), kind.name if kind else message.actor_name)
        setattr(message, _COUNTED, labels)
        metrics.in_progress(*labels, 1)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._done(message)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self._done(message)

    def _done(self, message: dramatiq.MessageProxy) -> None:
        if message.failed:  # also a message refused before this middleware saw it (a bad signature)
            metrics.dead_lettered(q_name(message.queue_name))
        labels: tuple[str, str] | None = getattr(message, _COUNTED, None)
        if labels is None:  # skipped before this middleware saw it
            return
        delattr(message, _COUNTED)
        metrics.in_progress(*labels, -1)
        attempt = attempt_of(message)
        if attempt is None or attempt.outcome is None:
            return
        now, clock = time.time(), time.monotonic()
        began = attempt.began or clock
        started_at = now - (clock - began)
        metrics.attempt_finished(
            *labels, attempt.outcome.value, clock - began, started_at - _due(message) / 1000
        )


def _due(message: dramatiq.MessageProxy) -> float:
    """When the message was due, in ms since 1970: its held due time, else its enqueue time."""
    due = message.options.get(DUE_OPTION)
    if isinstance(due, int | float) and not isinstance(due, bool):
        return float(due)
    stamp = message.message_timestamp
    return float(stamp) if isinstance(stamp, int | float) else time.time() * 1000
