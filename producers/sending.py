"""How a validated job reaches RabbitMQ and PostgreSQL: which write goes first, retries across
an outage, and undoing half an enqueue.

A plain job (no idempotency key, no delay) is published first and its row written while
RabbitMQ stores and confirms the message: the two round trips overlap instead of following
each other, and writing the row does not delay the job's start. A worker that gets the
message before the row exists makes the row itself (it records a job on first sight), so
either order ends with one row. A job with an idempotency key or a delay writes its row
first: the key must be claimed, or the message held, before anything is sent.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import dramatiq

from jobs.broker import BROKER_ERRORS, broker_unavailable
from jobs.errors import JobNotRecorded, ServiceUnavailable
from jobs.settings import Settings
from jobs.store import JobStore, NewJob
from jobs.store.jobs import JobInfo
from producers.pipelined import PipelinedPublisher

logger = logging.getLogger("conveyor.producer")

T = TypeVar("T")

#: Seconds between two attempts while RabbitMQ or PostgreSQL is unreachable (doubling up to the maximum).
RETRY_MIN = 0.25
RETRY_MAX = 2.0


class Sender:
    """Publishes jobs' messages and writes their rows for one :class:`~producers.Client`.

    Thread-safe: each thread publishes on its own connection (pika's are not thread-safe).
    """

    def __init__(self, settings: Settings, broker: dramatiq.Broker, jobs: JobStore) -> None:
        self.settings = settings
        self.broker = broker
        self.jobs = jobs
        self._local = threading.local()
        self._publishers: list[PipelinedPublisher] = []
        self._publishers_lock = threading.Lock()

    def enqueue(
        self, message: dramatiq.Message[Any], job: NewJob, delay_ms: int | None
    ) -> tuple[JobInfo, bool]:
        """Send one job; returns its row and whether this call created it (False: the
        idempotency key was taken, nothing was sent).

        Raises:
            ServiceUnavailable: RabbitMQ or PostgreSQL stayed unreachable for ``enqueue_timeout``
                seconds; no job was created, except for :class:`JobNotRecorded`.
        """
        if self._sends_first(job, delay_ms):
            return self._send_then_record(message, job), True
        info, created = self.jobs.create(job)
        if created and job.held is None:
            self._publish(message, delay_ms)
        return info, created

    def enqueue_many(
        self, messages: Sequence[dramatiq.Message[Any]], jobs: list[NewJob], delay_ms: int | None
    ) -> list[JobInfo]:
        """Publish every message with pipelined confirms and write every row in one statement
        while RabbitMQ confirms them (plain jobs, as :meth:`enqueue`); delayed jobs' rows and
        held messages are written first, and nothing is published.

        Raises:
            ServiceUnavailable: as :meth:`enqueue`; :class:`JobNotRecorded` when the messages
                were confirmed but PostgreSQL stayed unreachable.
        """
        if jobs and all(self._sends_first(job, delay_ms) for job in jobs):
            return self._send_many_then_record(messages, jobs)
        infos = self.jobs.create_many(jobs)
        if all(job.held is None for job in jobs):
            self._publish_many(messages, delay_ms)
        return infos

    def close(self) -> None:
        with self._publishers_lock:
            publishers, self._publishers = self._publishers, []
        for publisher in publishers:
            publisher.close()

    def _sends_first(self, job: NewJob, delay_ms: int | None) -> bool:
        plain = job.held is None and job.idempotency_key is None and delay_ms is None
        direct = self.jobs.db.direct  # None with SQLite (the demo), which keeps the simple order
        # Only over a connection known to work: a database that is down, or a wrong URL, then
        # fails the enqueue before anything is sent (the first enqueue opens the connection).
        return plain and not self.settings.is_embedded and direct is not None and direct.connected

    def _send_then_record(self, message: dramatiq.Message[Any], job: NewJob) -> JobInfo:
        try:
            self.broker.declare_queue(message.queue_name, ensure=True)  # type: ignore[call-arg]
            self._publisher.send([message])
        except BROKER_ERRORS as exc:
            # Nothing went out: row first, then publishing retried until enqueue_timeout.
            logger.warning("enqueue of job %s: RabbitMQ unavailable (%s); retrying", job.id, exc)
            info = self.jobs.create_sent(job)  # some of it may have gone out: a worker's row is kept
            self._publish(message, None)
            return info
        info = self._record_sent(lambda: self.jobs.create_sent(job), [job], f"row of job {job.id}")
        try:
            self._publisher.confirm()
        except BROKER_ERRORS as exc:
            logger.warning("enqueue of job %s: not confirmed (%s); publishing again", job.id, exc)
            self._publish(message, None)  # a duplicate copy is harmless: it is skipped
        return info

    def _send_many_then_record(
        self, messages: Sequence[dramatiq.Message[Any]], jobs: list[NewJob]
    ) -> list[JobInfo]:
        try:
            for queue in {m.queue_name for m in messages}:
                self.broker.declare_queue(queue, ensure=True)  # type: ignore[call-arg]
            self._publisher.send(messages)
        except BROKER_ERRORS as exc:
            # Some may have gone out: the rows first (a worker's are kept), then all published again.
            logger.warning("enqueue of %d jobs: RabbitMQ unavailable (%s); retrying", len(jobs), exc)
            infos = self.jobs.create_many_sent(jobs)
            self._publish_many(messages, None)
            return infos
        infos = self._record_sent(lambda: self.jobs.create_many_sent(jobs), jobs, f"rows of {len(jobs)} jobs")
        try:
            self._publisher.confirm()
        except BROKER_ERRORS as exc:
            logger.warning("enqueue of %d jobs: not confirmed (%s); publishing again", len(jobs), exc)
            self._publish_many(messages, None)  # duplicate copies are harmless: they are skipped
        return infos

    def _record_sent(self, write: Callable[[], T], jobs: Sequence[NewJob], what: str) -> T:
        """``write()`` the rows of jobs whose messages are out, retrying while PostgreSQL is
        unreachable; then :class:`JobNotRecorded` (the jobs still run: their workers write them)."""
        try:
            return self._retried(write, ServiceUnavailable, what)
        except ServiceUnavailable as exc:
            with contextlib.suppress(*BROKER_ERRORS):
                self._publisher.confirm()
            raise JobNotRecorded(jobs[0].id, exc, job_ids=[job.id for job in jobs]) from None

    def _publish(self, message: dramatiq.Message[Any], delay_ms: int | None) -> None:
        """Publish and wait for RabbitMQ's confirm, retrying while RabbitMQ is unreachable (a
        restart); then undo the row and raise."""
        try:
            self._retried(
                lambda: self.broker.enqueue(message, delay=delay_ms),
                BROKER_ERRORS,
                f"enqueue of job {message.message_id}",
            )
        except BROKER_ERRORS as exc:
            # Undo the row: the job was never sent, so it must not wait as `queued` forever.
            self.jobs.forget(message.message_id)
            raise broker_unavailable(self.settings, exc) from None

    def _publish_many(self, messages: Sequence[dramatiq.Message[Any]], delay_ms: int | None) -> None:
        if self.settings.is_embedded:  # in-process broker: no AMQP to pipeline
            for message in messages:
                self._publish(message, delay_ms)
            return

        def declare_and_publish() -> None:
            for queue in {m.queue_name for m in messages}:
                self.broker.declare_queue(queue, ensure=True)  # type: ignore[call-arg]
            self._publisher.publish(messages)

        try:
            self._retried(declare_and_publish, BROKER_ERRORS, f"enqueue of {len(messages)} jobs")
        except BROKER_ERRORS as exc:
            self.jobs.forget_many(m.message_id for m in messages)
            raise broker_unavailable(self.settings, exc) from None

    def _retried(
        self,
        attempt: Callable[[], T],
        errors: type[BaseException] | tuple[type[BaseException], ...],
        what: str,
    ) -> T:
        """``attempt()``, made again after a pause (doubling) while it raises one of ``errors``,
        for up to ``enqueue_timeout`` seconds; then its last error is raised."""
        deadline = time.monotonic() + self.settings.enqueue_timeout
        pause = RETRY_MIN
        while True:
            try:
                return attempt()
            except errors as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                logger.warning("%s: %s; trying again", what, exc)
                # The last pause is cut short so that the last try falls on the deadline: the
                # caller rides out an outage of up to enqueue_timeout, not of the last full pause.
                time.sleep(min(pause, remaining))
                pause = min(pause * 2, RETRY_MAX)

    @property
    def _publisher(self) -> PipelinedPublisher:
        """This thread's publisher, opened on first use."""
        publisher: PipelinedPublisher | None = getattr(self._local, "publisher", None)
        if publisher is None:
            publisher = self._local.publisher = PipelinedPublisher(self.settings)
            with self._publishers_lock:
                self._publishers.append(publisher)
        return publisher
