"""What the CLI does to the platform besides enqueueing: one facade over the store, RabbitMQ and
Redis, so that a command never reaches into a store (or a client's) itself.

Enqueueing, retrying and waiting belong to ``producers.Client``; everything an admin reads,
prunes or requeues is here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, suppress
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import redis

from jobs.admin import dlq, prune
from jobs.admin.audit import ActionRecord, Actor, Auditor
from jobs.admin.dead_groups import DeadView, dead_view
from jobs.admin.files import RemovedFiles, outbox_folder, remove_job_files
from jobs.admin.gdpr import Subjects
from jobs.admin.overview import charts, job_counters, queue_names, window
from jobs.admin.partitions import PartitionUpkeep
from jobs.admin.pauses import PauseOutcome, pause_queue, paused_queues, resume_queue
from jobs.admin.queues import QueueStats, queue_stats, rabbitmq_counts
from jobs.admin.retention import Retention
from jobs.admin.stats import GroupStats, job_stats
from jobs.admin.workers import WorkersView, live_replicas
from jobs.errors import SchemaMissing, ServiceUnavailable
from jobs.redis_lite import redis_client
from jobs.schedule.leader import current_leader
from jobs.schedule.runner import Scheduler, replica_identity
from jobs.schedule.spec import Schedule
from jobs.schedule.status import EntryStatus, entry_statuses
from jobs.services import Producer
from jobs.settings import Settings
from jobs.store import AttemptInfo, Database, JobInfo, JobSelection, JobStore
from jobs.store.artifacts import ArtifactInfo, ArtifactStore
from jobs.store.audit import AuditEntry
from jobs.store.migrate import ensure_database, upgrade
from jobs.store.partitions import Partition, PartitionStore
from jobs.store.pauses import QueuePause
from jobs.store.schedule import TickStore
from jobs.store.search import JobPage, JobQuery, SearchStore
from jobs.store.stats import RunningAttempt, running_attempts


class Operations:
    """An admin's view of one deployment (its settings), on a database the caller owns.

    ``actor``: who acts, for the audit log (default: the OS user of this host, source ``cli``;
    the web dashboard passes ``Actor.web(user, …)``).
    """

    def __init__(self, settings: Settings, db: Database, actor: Actor | None = None) -> None:
        self.settings = settings
        self._db = db
        self._jobs = JobStore(db)
        self.actor = actor or Actor.cli()

    @cached_property
    def _redis(self) -> redis.Redis:
        return redis_client(self.settings.redis_url)

    def close(self) -> None:
        """Close the Redis connection (the database is the caller's)."""
        if "_redis" in self.__dict__:
            self._redis.close()

    # ------------------------------------------------------------ jobs

    def find_jobs(self, selection: JobSelection) -> list[JobInfo]:
        """A page of jobs, newest first."""
        return self._jobs.find(selection)

    def job_ids(self, selection: JobSelection) -> list[str]:
        """The ids of every job the selection matches (its page size aside)."""
        return self._jobs.ids(selection)

    def job(self, job_id: str) -> tuple[JobInfo, list[AttemptInfo], list[JobInfo]]:
        """A job, its attempts (oldest first) and the jobs it enqueued.

        Raises:
            JobNotFound: no such job.
        """
        return self._jobs.get(job_id), self._jobs.attempts(job_id), self._jobs.children(job_id)

    def search_jobs(self, query: JobQuery) -> JobPage:
        """A page of the dashboard's job listing (see :mod:`jobs.store.search`).

        Raises:
            ValueError: a payload search on encrypted payloads.
        """
        return SearchStore(self._db).page(query)

    def finished_per_minute(self, since: datetime) -> list[int]:
        return self._jobs.finished_per_minute(since)

    # ------------------------------------------------------------ audit

    @cached_property
    def auditor(self) -> Auditor:
        """Writes this actor's rows in the namespace's audit log."""
        return Auditor(self._db, self.settings.namespace, self.actor)

    def audit(
        self, action: str, *, job_ids: Sequence[str] | None = None, selection: dict[str, object] | None = None
    ) -> AbstractContextManager[ActionRecord]:
        """A block doing one state-changing action: one audit row when it ends (see
        :meth:`jobs.admin.audit.Auditor.action`)."""
        return self.auditor.action(action, job_ids=job_ids, selection=selection)

    def audit_log(
        self, *, since: datetime | None = None, action: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """The namespace's audit rows, newest first."""
        return self.auditor.entries(since=since, action=action, limit=limit)

    @cached_property
    def subjects(self) -> Subjects:
        """GDPR export and erasure of one e-mail address's records (audited)."""
        return Subjects(self.settings, self._db, self.auditor)

    # ------------------------------------------------------------ views

    def queues(self) -> list[QueueStats]:
        """Every queue of the namespace (RabbitMQ's counts and the store's figures)."""
        return queue_stats(self.settings, self._db)

    def pause_queue(self, name: str) -> PauseOutcome:
        """Pause a queue (short or full name): workers stop fetching from it; audited.

        Raises:
            UnknownQueue: no job kind uses such a queue.
        """
        return pause_queue(self.settings, self._db, self.auditor, name)

    def resume_queue(self, name: str) -> PauseOutcome:
        """Resume a paused queue (short or full name); audited.

        Raises:
            UnknownQueue: no job kind uses such a queue.
        """
        return resume_queue(self.settings, self._db, self.auditor, name)

    def paused_queues(self) -> dict[str, QueuePause]:
        """The namespace's paused queues, by full name."""
        return paused_queues(self.settings, self._db)

    def stats(self, since: datetime, by: str = "kind") -> list[GroupStats]:
        return job_stats(self._db, since, by)

    def overview(self, range_name: str) -> dict[str, Any]:
        """The overview's charts over the last ``1h`` or ``24h`` (PostgreSQL).

        Raises:
            ValueError: an unknown range.
        """
        return charts(self._db, self.settings.namespace, window(range_name))

    def counters(self) -> dict[str, int | None]:
        """Live counters: jobs queued, running and failed in the last hour (PostgreSQL), dead
        letters (RabbitMQ) and live worker replicas (Redis); ``None`` for a service down."""
        counters: dict[str, int | None] = dict(job_counters(self._db, self.settings.namespace))
        names = queue_names(self.settings)
        try:
            counts = rabbitmq_counts(self.settings, [f"{name}.XQ" for name in names])
            counters["dead_letters"] = sum(ready for ready, _ in counts.values())
        except ServiceUnavailable:
            counters["dead_letters"] = None
        view = self.workers()
        counters["workers_up"] = len(view.replicas) if view.source == "redis" else None
        return counters

    def running_jobs(self, limit: int = 200) -> list[RunningAttempt]:
        """Jobs running now with the worker process running each, oldest first."""
        return running_attempts(self._db, self.settings.namespace, limit)

    def workers(self) -> WorkersView:
        """Live replicas from Redis, or who ran jobs lately when Redis is down."""
        return live_replicas(self.settings, self._redis, self._db)

    # ------------------------------------------------------------ maintenance

    def count_prunable(self, older_than: datetime, statuses: Iterable[str] | None = None) -> int:
        return prune.count_prunable(self._db, older_than, statuses)

    def prune(
        self,
        older_than: datetime,
        statuses: Iterable[str] | None,
        on_batch: Callable[[int], None],
        *,
        dry_run: bool = False,
    ) -> prune.PruneResult:
        """Jobs, artifacts, files and ``.eml`` copies deleted, or counted with ``dry_run``
        (see :func:`jobs.admin.prune.prune_jobs`)."""
        outbox = outbox_folder(self.settings)
        return prune.prune_jobs(self._db, older_than, statuses, on_batch, outbox=outbox, dry_run=dry_run)

    def remove_job_files(self, job_ids: Sequence[str], *, dry_run: bool = False) -> RemovedFiles:
        """Delete these jobs' artifacts, files and ``.eml`` copies; the job rows stay
        (see :func:`jobs.admin.files.remove_job_files`)."""
        return remove_job_files(self._db, self.settings, job_ids, dry_run=dry_run)

    # ------------------------------------------------------------ dead letters

    def dead_letters(self, queue: str | None = None) -> list[dlq.DeadLetter]:
        return dlq.list_dead(self.settings, self._db, queue=queue)

    def dead_view(self, queue: str | None = None, *, shown: int = 200) -> DeadView:
        """The dead letters as the job rows account for them, with RabbitMQ's count (see
        :func:`jobs.admin.dead_groups.dead_view`)."""
        return dead_view(self.settings, self._db, queue, shown)

    def requeue_dead(
        self, ids: Sequence[str], *, all: bool, queue: str | None, progress: dlq.Progress | None = None
    ) -> dlq.Outcome:
        return dlq.requeue(self.settings, self._db, ids, all=all, queue=queue, progress=progress)

    def purge_dead(
        self, ids: Sequence[str], *, all: bool, queue: str | None, progress: dlq.Progress | None = None
    ) -> dlq.Outcome:
        return dlq.purge(self.settings, self._db, ids, all=all, queue=queue, progress=progress)

    def requeue_dead_group(self, key: str, *, queue: str | None = None) -> dlq.Outcome:
        """Requeue the dead letters of one error fingerprint, matched now (see
        :func:`jobs.admin.dlq.requeue_group`)."""
        return dlq.requeue_group(self.settings, self._db, key, queue=queue)

    def purge_dead_group(self, key: str, *, queue: str | None = None) -> dlq.Outcome:
        """Purge the dead letters of one error fingerprint, matched now (see
        :func:`jobs.admin.dlq.purge_group`)."""
        return dlq.purge_group(self.settings, self._db, key, queue=queue)

    # ------------------------------------------------------------ schedules

    def check_schedule_store(self) -> None:
        """Fail fast when ``schedule_ticks`` cannot be read.

        Raises:
            ServiceUnavailable: the database cannot be reached.
            SchemaMissing: ``conveyor db upgrade`` has not run.
        """
        TickStore(self._db, self.settings.namespace).last_ticks()

    def scheduler(self, plan: Schedule, producer: Producer) -> Scheduler:
        """A scheduler replica enqueueing ``plan``'s ticks through ``producer``; as leader it
        also applies the retention settings, audited as source ``scheduler``.

        Raises:
            SettingsError: a per-kind retention names no registered kind.
        """
        identity = replica_identity()
        retention = None
        if self.settings.retention_days is not None or self.settings.retention_days_by_kind:
            auditor = Auditor(self._db, self.settings.namespace, Actor.scheduler(identity))
            retention = Retention(self.settings, self._db, auditor)
        upkeep = PartitionUpkeep(PartitionStore(self._db))
        return Scheduler(plan, producer, self._db, identity=identity, retention=retention, upkeep=upkeep)

    def schedule_status(self, plan: Schedule, count: int) -> tuple[list[EntryStatus], str | None]:
        """Each entry's next ``count`` runs and last tick, and the leading replica (PostgreSQL only)."""
        statuses = entry_statuses(plan, self._db, self.settings.namespace, datetime.now(UTC), count)
        leader = (
            current_leader(self._db, self.settings.namespace) if self._db.dialect == "postgresql" else None
        )
        return statuses, leader

    def partitions(self) -> list[Partition]:
        """The partitions of ``jobs`` (PostgreSQL; none on SQLite), the default one first.

        Raises:
            ServiceUnavailable: the database cannot be reached.
        """
        return PartitionStore(self._db).partitions()

    def schedule_ticks(self) -> tuple[dict[str, datetime], str | None]:
        """Each entry's last tick in this namespace (by name) and the leading replica, without
        the schedule file (the dashboard started without ``--schedule``)."""
        ticks = TickStore(self._db, self.settings.namespace).last_ticks()
        leader = (
            current_leader(self._db, self.settings.namespace) if self._db.dialect == "postgresql" else None
        )
        return ticks, leader

    # ------------------------------------------------------------ artifacts

    def artifacts(self, *, job_id: str | None, limit: int) -> list[ArtifactInfo]:
        return self._artifacts.recent(job_id=job_id, limit=limit)

    def open_artifact(self, artifact_id: str) -> tuple[ArtifactInfo, Iterator[bytes]]:
        """An artifact's facts and its bytes in chunks. Raises ``ArtifactNotFound``."""
        return self._artifacts.open(artifact_id)

    @cached_property
    def _artifacts(self) -> ArtifactStore:
        return ArtifactStore(self._db, self.settings.artifact_url)


def check_database(url: str) -> None:
    """Raise :class:`~jobs.errors.ServiceUnavailable` unless the database at ``url`` answers."""
    db = Database(url)
    try:
        db.check()
    finally:
        db.dispose()


def upgrade_schema(
    url: str, revision: str = "head", *, audit: tuple[str, Actor] | None = None
) -> tuple[bool, str | None, str | None]:
    """Create the database when missing, then migrate it: whether it was created, and the
    revisions before and after.

    ``audit``: (namespace, actor) to record the upgrade in the audit log, once it has the table
    (a target revision older than the log's records nothing).
    """
    created = ensure_database(url)
    db = Database(url)
    try:
        before, after = upgrade(db, revision)
        if audit is not None and (created or before != after):  # nothing changed: nothing to log
            with suppress(SchemaMissing):
                Auditor(db, *audit).record(
                    "db.upgrade", details={"created": created, "from": before, "to": after}
                )
    finally:
        db.dispose()
    return created, before, after
