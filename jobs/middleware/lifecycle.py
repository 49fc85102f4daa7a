"""Lifecycle middleware: every transition and every attempt of a job, recorded in the store.

Its ``after_*`` hooks run after those of Dramatiq's ``Retries`` middleware (it is
placed before it), so that when it records the end of an attempt it knows whether
the message will be retried or dead-lettered. A worker thread waits for the commit of
its job's start (the guard against running a job twice), not for that of its end: the
end is handed to the store detached, and the message is acknowledged or rejected when
that write lands (``jobs.consumer.ack_after``), so only after its outcome is committed.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import wait as wait_for_futures
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import dramatiq
from dramatiq.common import q_name
from dramatiq.middleware import Middleware, SkipMessage

from jobs.broker import HELD_OPTION, ConveyorRabbitmqBroker
from jobs.consumer import ack_after
from jobs.context import JobContext, current_job, set_current_job
from jobs.ids import is_uuid
from jobs.kinds import ACTOR_KINDS, JobKind
from jobs.status import AttemptOutcome
from jobs.store import AttemptEnd, AttemptStore, SeenMessage, StartedAttempt, WorkerIdentity
from jobs.store.delayed import DelayedStore, HeldMessage
from jobs.store.waiting import wait_for_store

logger = logging.getLogger("conveyor.lifecycle")

T = TypeVar("T")

#: How many times a copy of a running job's message has been put back to wait (see ``_take_over``).
RECHECKS_OPTION = "conveyor_rechecks"
#: Seconds a stopping consumer waits for the ends still being written, to acknowledge their messages.
SETTLE_TIMEOUT = 10.0


class Lifecycle(Middleware):
    """Records ``running`` / ``succeeded`` / ``retrying`` / ``failed`` and one row per attempt."""

    def __init__(
        self,
        attempts: AttemptStore,
        identity: WorkerIdentity,
        kinds: Mapping[str, JobKind] = ACTOR_KINDS,
        stopping: threading.Event | None = None,
        alive: Callable[[str], bool | None] = lambda worker_id: None,
        recheck_after: float = 5.0,
    ) -> None:
        self.attempts = attempts
        #: Whether a worker process (by id) is alive, None when unknown (the registry is down).
        self.alive = alive
        #: Seconds before a message of a job still running elsewhere is looked at again.
        self.recheck_after = recheck_after
        self.delayed = DelayedStore(attempts.db)
        self.identity = identity
        self.kinds = kinds
        self.stopping = stopping or threading.Event()
        self._local = threading.local()
        # What each worker thread is running, for a stop that cannot wait for it to end.
        self._in_flight: dict[int, JobContext] = {}
        # Jobs whose end is being written (by job id): still ``running`` in the store until it lands.
        self._ending: dict[str, Future[bool]] = {}
        self._in_flight_lock = threading.Lock()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        kind = self.kinds.get(message.actor_name)
        if kind is None:  # an actor of the application's own: not a Conveyor job
            return
        if not is_uuid(message.message_id):
            logger.error("rejecting message %r: its id is not a UUID", message.message_id)
            message.fail()
            raise SkipMessage("malformed message id")
        seen = _seen_message(message, kind, broker)
        started = self._write(lambda: self.attempts.start(seen, self.identity))
        if started is None:
            started = self._take_over(seen, message)
        if started is None:
            logger.info("job %s %s: already finished or cancelled, skipping", seen.job_id, kind.name)
            raise SkipMessage("job already finished or cancelled")
        self._local.started = time.monotonic()
        self._local.retry = None
        job_id = seen.job_id
        ctx = JobContext(
            job_id=job_id,
            kind=kind.name,
            attempt=started.number,
            cancel_check=lambda: self.attempts.cancel_requested(job_id),
        )
        set_current_job(ctx)
        with self._in_flight_lock:
            self._in_flight[threading.get_ident()] = ctx
        budget = seen.max_retries if seen.max_retries is not None else kind.max_retries
        if started.lost_runs > budget:
            # A message whose runs keep killing their worker is dead-lettered, not run forever.
            message.fail()
            self._finish(message, AttemptEnd(AttemptOutcome.FAILED, error=_gave_up(started.lost_runs)))
            raise SkipMessage("too many lost attempts")
        # Debug, not info: a line per start costs a worker measurable CPU, and `jobs show` has it.
        logger.debug("job %s %s attempt %d: running", job_id, kind.name, started.number)

    def _take_over(self, seen: SeenMessage, message: dramatiq.MessageProxy) -> StartedAttempt | None:
        """Start a ``running`` job again if its worker is gone; None if it is not running.

        A job's message can come twice while it runs: RabbitMQ redelivers a message whose
        channel closed mid-job (a broker restart), or a producer that lost a confirm published
        it again. Running it beside the live run would run it twice, so the message waits in
        PostgreSQL and is looked at again later; only a dead worker's job is taken over.
        """
        running = self._write(lambda: self.attempts.running_attempt(seen.job_id))
        if running is None:
            return None
        if running.worker is not None and self._runs_elsewhere(seen.job_id, running.worker):
            # 1 s, 2 s, 4 s … up to ``recheck_after``: a worker that just died is noticed soon
            # (its supervisor drops its registry entry), a long job is not polled often.
            rechecks = int(message.options.get(RECHECKS_OPTION, 0))
            wait = min(2.0**rechecks, self.recheck_after)
            message.options[RECHECKS_OPTION] = rechecks + 1
            due = datetime.now(UTC) + timedelta(seconds=wait)
            self._write(lambda: self.delayed.hold(HeldMessage.of(message, due)))
            logger.info(
                "job %s: attempt %d still runs on %s; this copy of its message waits %.0f s",
                seen.job_id,
                running.number,
                running.worker,
                wait,
            )
            raise SkipMessage("job running on a live worker")
        return self._write(lambda: self.attempts.start(seen, self.identity, take_over=running.number))

    def _runs_elsewhere(self, job_id: str, worker_id: str) -> bool:
        if worker_id == self.identity.worker_id:  # this very process: is it running it, or ending it?
            with self._in_flight_lock:
                return job_id in self._ending or any(ctx.job_id == job_id for ctx in self._in_flight.values())
        # Unknown (the registry is down) counts as gone: a job never stays stuck on a dead worker.
        return self.alive(worker_id) is True

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        ctx = current_job()
        if ctx is None or ctx.job_id != message.message_id:
            return
        if exception is None and ctx.cancelled:
            end = AttemptEnd(AttemptOutcome.CANCELLED, error="JobCancelled: cancelled while running")
        elif exception is None:
            end = AttemptEnd(AttemptOutcome.SUCCEEDED, result=ctx.result)
        else:
            outcome = AttemptOutcome.FAILED if message.failed else AttemptOutcome.RETRYING
            end = AttemptEnd(
                outcome,
                error=describe_error(exception),
                traceback="".join(traceback.format_exception(exception, limit=30)),
                eta=retry.due_at if (retry := getattr(self._local, "retry", None)) else None,
            )
        self._finish(message, end)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        set_current_job(None)
        with self._in_flight_lock:
            self._in_flight.pop(threading.get_ident(), None)

    def interrupt_in_flight(self, reason: str) -> int:
        """Record the jobs still running as ``interrupted``: their worker stops without waiting.

        One try each, no waiting out an outage (the process is about to exit); an attempt
        left open is marked ``lost`` when its message is redelivered. Returns how many were recorded.
        """
        with self._in_flight_lock:
            running = list(self._in_flight.values())
            self._in_flight.clear()
        recorded = 0
        for ctx in running:
            try:
                self.attempts.finish(
                    ctx.job_id,
                    ctx.attempt,
                    AttemptEnd(AttemptOutcome.INTERRUPTED, error=f"WorkerStopped: {reason}"),
                )
                recorded += 1
            except Exception as exc:  # best effort on the way out: never block the exit
                logger.warning("job %s: could not record the interruption: %s", ctx.job_id, exc)
        for ctx in running:
            logger.warning(
                "job %s %s attempt %d: interrupted (%s)", ctx.job_id, ctx.kind, ctx.attempt, reason
            )
        return recorded

    def hold(self, message: dramatiq.Message[Any], due_at: datetime) -> None:
        """The broker's sink for delayed messages (see ``ConveyorRabbitmqBroker``).

        The retry of the job this thread runs is kept until the attempt's end is written, and
        goes into the same transaction: a retry is never lost, nor acknowledged before it is
        stored (Dramatiq #545). Any other delayed message is stored at once.
        """
        held = HeldMessage.of(message, due_at)
        ctx = current_job()
        if ctx is not None and ctx.job_id == message.message_id:
            self._local.retry = held
            return
        self._write(lambda: self.delayed.hold(held))

    def before_delay_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        # A plain Dramatiq producer's delayed message reached a ``.DQ``: store it and let Dramatiq
        # acknowledge it now (HELD_OPTION makes its hand-over publish nothing) instead of holding it.
        if not isinstance(broker, ConveyorRabbitmqBroker) or broker.hold is None:
            return
        eta = message.options.get("eta") or 0
        self._write(
            lambda: self.delayed.hold(HeldMessage.of(message, datetime.fromtimestamp(eta / 1000, UTC)))
        )
        message.options[HELD_OPTION] = True
        message.options["eta"] = 0

    def _finish(self, message: dramatiq.MessageProxy, end: AttemptEnd) -> None:
        ctx = current_job()
        assert ctx is not None
        set_current_job(None)
        with self._in_flight_lock:
            self._in_flight.pop(threading.get_ident(), None)
        retry = getattr(self._local, "retry", None)
        self._local.retry = None
        recorded = self.attempts.finish_detached(
            ctx.job_id, ctx.attempt, end, held=retry, stopping=self.stopping
        )
        self._track_ending(ctx.job_id, recorded)
        ack_after(message, recorded)
        duration = time.monotonic() - getattr(self._local, "started", time.monotonic())
        log = logger.info if end.outcome is AttemptOutcome.SUCCEEDED else logger.warning
        suffix = f": {end.error}" if end.error else ""
        log(
            "job %s %s attempt %d: %s after %.1f ms%s",
            ctx.job_id,
            ctx.kind,
            ctx.attempt,
            end.outcome.value,
            duration * 1000,
            suffix,
        )

    def before_consumer_thread_shutdown(self, broker: dramatiq.Broker, thread: Any) -> None:
        # The worker threads have stopped: let the ends still being written land, so that their
        # messages are acknowledged before the channel closes (else they would come again).
        with self._in_flight_lock:
            pending = list(self._ending.values())
        if pending:
            wait_for_futures(pending, timeout=SETTLE_TIMEOUT)

    def _track_ending(self, job_id: str, recorded: Future[bool]) -> None:
        with self._in_flight_lock:
            self._ending[job_id] = recorded

        def landed(_: Future[bool]) -> None:
            with self._in_flight_lock:
                if self._ending.get(job_id) is recorded:
                    del self._ending[job_id]
            if (error := recorded.exception()) is not None:
                logger.error("job %s: its end could not be recorded: %s", job_id, error)

        recorded.add_done_callback(landed)

    def _write(self, operation: Callable[[], T]) -> T:
        return wait_for_store(operation, self.stopping)


def describe_error(exception: BaseException) -> str:
    """``Type: message`` — what ``jobs.error`` holds."""
    text = str(exception).strip()
    return f"{type(exception).__name__}: {text}" if text else type(exception).__name__


def _gave_up(lost_runs: int) -> str:
    return f"WorkerLost: gave up after {lost_runs} runs that ended with their worker dying"


def _seen_message(message: dramatiq.MessageProxy, kind: JobKind, broker: dramatiq.Broker) -> SeenMessage:
    max_retries = message.options.get("max_retries")
    if max_retries is None:
        max_retries = broker.get_actor(message.actor_name).options.get("max_retries", kind.max_retries)
    return SeenMessage(
        job_id=message.message_id,
        kind=kind.name,
        queue=q_name(message.queue_name),
        payload=dict(message.kwargs),
        max_retries=max_retries,
        created_at=datetime.fromtimestamp(message.message_timestamp / 1000, UTC),
    )
