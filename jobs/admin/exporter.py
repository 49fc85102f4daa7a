"""The cluster exporter: one namespace's queues, jobs, workers and scheduler as Prometheus metrics.

:class:`ClusterCollector` reads RabbitMQ (the management API), PostgreSQL and Redis when it is
scraped, never in between, so a figure is never older than the scrape that shows it. The
exception is the count of finished jobs, a scan of the whole ``jobs`` table: :class:`FinalCounts`
refreshes it in a thread of its own, every ``final_every`` seconds, off the scrape path.

A source that fails leaves out the families it feeds and sets ``conveyor_exporter_up{source}``
to 0; the scrape itself always answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from socketserver import ThreadingMixIn
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from jobs.admin.queues import ManagementQueue, management_queues
from jobs.admin.workers import group_replicas, read_beats
from jobs.kinds import KINDS
from jobs.logs import mask_secrets
from jobs.schedule.leader import current_leader
from jobs.settings import Settings
from jobs.status import JobStatus
from jobs.store import Database
from jobs.store.exporter import ExporterStore, JobCounts, LiveFigures

logger = logging.getLogger("conveyor.exporter")
T = TypeVar("T")

#: Where each family comes from; ``conveyor_exporter_up{source}`` has one series per source.
SOURCES = ("rabbitmq", "postgresql", "redis")
#: Companion queues Dramatiq declares beside each queue: delayed messages, and dead letters.
DELAY_SUFFIX, DEAD_SUFFIX = ".DQ", ".XQ"


@dataclass(frozen=True)
class ExporterOptions:
    """How the exporter reads. Seconds throughout."""

    #: A waiting job counts towards drift only once it has been due this long: long enough for
    #: its message to be published and for RabbitMQ's statistics (sampled every 5 s) to show it.
    drift_grace: float = 60.0
    #: How often the finished jobs are counted (a table scan); 0: at every scrape.
    final_every: float = 60.0


@dataclass(frozen=True)
class RabbitView:
    """The namespace's queues (base names) with their ``.DQ`` and ``.XQ`` companions folded in."""

    queues: dict[str, ManagementQueue]
    delayed: dict[str, int]
    dead: dict[str, int]

    @classmethod
    def of(cls, raw: dict[str, ManagementQueue]) -> RabbitView:
        queues: dict[str, ManagementQueue] = {}
        delayed: dict[str, int] = {}
        dead: dict[str, int] = {}
        for name, queue in raw.items():
            for suffix, into in ((DELAY_SUFFIX, delayed), (DEAD_SUFFIX, dead)):
                if name.endswith(suffix):
                    into[name.removesuffix(suffix)] = queue.ready + queue.unacked
                    break
            else:
                queues[name] = queue
        return cls(queues=queues, delayed=delayed, dead=dead)

    def messages(self, queue: str) -> int:
        """Every message of ``queue`` anywhere in RabbitMQ: ready, unacknowledged, delayed, dead."""
        base = self.queues.get(queue, ManagementQueue(0, 0, 0))
        return base.ready + base.unacked + self.delayed.get(queue, 0) + self.dead.get(queue, 0)


@dataclass(frozen=True)
class StoreView:
    """What PostgreSQL says at one scrape."""

    live: LiveFigures
    #: ``None`` when the finished jobs have not been counted (yet, or since a failure).
    final: JobCounts | None
    final_age: float | None
    leader: str | None


class FinalCounts:
    """The finished jobs per queue, kind and status, counted every ``every`` seconds in a thread
    (a scan of the whole table: too slow for a scrape on a big store); ``every`` 0 counts at
    each call instead."""

    def __init__(self, store: ExporterStore, namespace: str, every: float) -> None:
        self.store = store
        self.namespace = namespace
        self.every = every
        self._counted: tuple[JobCounts, float] | None = None
        #: The last count failed (logged once until one succeeds).
        self._failed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.every > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="conveyor-final-counts", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def current(self) -> tuple[JobCounts, float] | None:
        """The last counts with their age in seconds, or ``None`` when there are none.

        Raises:
            ServiceUnavailable: (``every`` 0 only) the database cannot be reached.
        """
        if self.every <= 0:
            return self.store.final_counts(self.namespace), 0.0
        counted = self._counted
        return None if counted is None else (counted[0], time.monotonic() - counted[1])

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._counted = (self.store.final_counts(self.namespace), time.monotonic())
            except Exception as exc:  # any failure: no figures until a count succeeds again
                if not self._failed:
                    logger.warning("counting finished jobs failed: %s", mask_secrets(str(exc)))
                self._counted, self._failed = None, True
            else:
                self._failed = False
            self._stop.wait(self.every)


class ClusterCollector(Collector):
    """A ``prometheus_client`` collector of one namespace's cluster view, read at each scrape."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        redis_client: redis.Redis,
        options: ExporterOptions,
        final: FinalCounts | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.redis = redis_client
        self.options = options
        self.store = ExporterStore(db)
        self.final = final or FinalCounts(self.store, settings.namespace, options.final_every)
        self._down: set[str] = set()
        self._lock = threading.Lock()
        #: Seconds the last scrape spent reading each source.
        self.read_seconds: dict[str, float] = {}

    def collect(self) -> Iterator[Metric]:
        # One scrape at a time: two Prometheus servers scraping together read the sources once each,
        # one after the other, rather than doubling the load at the same moment.
        with self._lock:
            metrics = list(self._metrics())
        yield from metrics

    def _metrics(self) -> Iterator[Metric]:
        # RabbitMQ first: a job still waiting when PostgreSQL is read had its message in RabbitMQ
        # when RabbitMQ was read, so drift never counts a message that was consumed in between.
        rabbit = self._read("rabbitmq", self._read_rabbitmq)
        store = self._read("postgresql", self._read_store)
        workers = self._read("redis", self._read_workers)
        queues = self._queues(rabbit, store)
        if rabbit is not None:
            yield from rabbit_families(rabbit, queues)
        if store is not None:
            known = {(self.settings.queue_name(kind.queue), kind.name) for kind in KINDS.values()}
            yield from store_families(store, queues, known)
        if rabbit is not None and store is not None:
            yield from combined_families(rabbit, store, queues)
        if workers is not None:
            yield from worker_families(*workers)
        up = GaugeMetricFamily(
            "conveyor_exporter_up", "1 when the source answered this scrape", labels=["source"]
        )
        for source in SOURCES:
            up.add_metric([source], 0.0 if source in self._down else 1.0)
        yield up
        yield from self._timings()

    def _read_rabbitmq(self) -> RabbitView:
        return RabbitView.of(management_queues(self.settings, f"{self.settings.namespace}."))

    def _read_store(self) -> StoreView:
        now = datetime.now(UTC)
        grace = timedelta(seconds=self.options.drift_grace)
        live = self.store.live_figures(self.settings.namespace, now, grace)
        final = self.final.current()
        leader = current_leader(self.db, self.settings.namespace)
        return StoreView(
            live=live,
            final=None if final is None else final[0],
            final_age=None if final is None else final[1],
            leader=leader,
        )

    def _read_workers(self) -> tuple[int, int]:
        beats = read_beats(self.redis, self.settings.namespace)
        return len(group_replicas(beats)), len(beats)

    def _read(self, source: str, read: Callable[[], T]) -> T | None:
        """``read()``, timed; on any failure ``None`` and the source marked down (logged once)."""
        started = time.perf_counter()
        try:
            value = read()
        except Exception as exc:  # a failing source must not fail the scrape
            if source not in self._down:
                logger.warning("%s unavailable to the exporter: %s", source, mask_secrets(str(exc)))
            self._down.add(source)
            return None
        finally:
            self.read_seconds[source] = time.perf_counter() - started
        if source in self._down:
            logger.info("%s answers the exporter again", source)
            self._down.discard(source)
        return value

    def _timings(self) -> Iterator[Metric]:
        timing = GaugeMetricFamily(
            "conveyor_exporter_read_seconds",
            "Seconds this scrape spent reading each source",
            labels=["source"],
        )
        for source in SOURCES:
            timing.add_metric([source], round(self.read_seconds.get(source, 0.0), 6))
        yield timing

    def _queues(self, rabbit: RabbitView | None, store: StoreView | None) -> list[str]:
        """The namespace's queues: those of the known kinds, and any RabbitMQ or the rows name."""
        names = {self.settings.queue_name(kind.queue) for kind in KINDS.values()}
        if rabbit is not None:
            names.update(rabbit.queues, rabbit.delayed, rabbit.dead)
        if store is not None:
            names.update(queue for queue, _, _ in store.live.counts)
            names.update(store.live.held)
        return sorted(names)


def rabbit_families(rabbit: RabbitView, queues: Iterable[str]) -> Iterator[Metric]:
    """Ready, unacknowledged, consumers and dead letters of each queue."""
    ready = _gauge("conveyor_queue_messages_ready", "Messages ready to be delivered (RabbitMQ)")
    unacked = _gauge("conveyor_queue_messages_unacked", "Messages delivered, not yet acknowledged (RabbitMQ)")
    consumers = _gauge("conveyor_queue_consumers", "Consumers of the queue (RabbitMQ)")
    dead = _gauge("conveyor_dead_letters", "Messages in the queue's dead-letter queue, <queue>.XQ (RabbitMQ)")
    for queue in queues:
        figures = rabbit.queues.get(queue, ManagementQueue(0, 0, 0))
        ready.add_metric([queue], figures.ready)
        unacked.add_metric([queue], figures.unacked)
        consumers.add_metric([queue], figures.consumers)
        dead.add_metric([queue], rabbit.dead.get(queue, 0))
    yield from (ready, unacked, consumers, dead)


def store_families(store: StoreView, queues: Iterable[str], known: set[tuple[str, str]]) -> Iterator[Metric]:
    """Job rows by queue, kind and status; the oldest waiting and running jobs; the leader."""
    now = datetime.now(UTC)
    live = store.live
    oldest_wait = _gauge(
        "conveyor_queue_oldest_wait_seconds", "Age of the oldest job due to run and not started (0: none)"
    )
    oldest_run = _gauge("conveyor_running_oldest_seconds", "Age of the oldest running attempt (0: none)")
    for queue in queues:
        oldest_wait.add_metric([queue], _age(now, live.oldest_waiting.get(queue)))
        oldest_run.add_metric([queue], _age(now, live.oldest_running.get(queue)))
    yield from (oldest_wait, oldest_run, job_counts(store, known))
    if store.final_age is not None:
        yield GaugeMetricFamily(
            "conveyor_jobs_final_age_seconds",
            "Age of the counts of finished jobs in conveyor_jobs (0: counted at this scrape)",
            value=round(store.final_age, 3),
        )
    yield GaugeMetricFamily(
        "conveyor_scheduler_leader",
        "1 while a scheduler replica holds the namespace's leader lock",
        value=0.0 if store.leader is None else 1.0,
    )
    if store.leader is not None:
        info = InfoMetricFamily("conveyor_scheduler_leader", "The scheduler replica that leads")
        info.add_metric([], {"leader": store.leader})
        yield info


def job_counts(store: StoreView, known: set[tuple[str, str]]) -> Metric:
    """``conveyor_jobs``: every status of every ``known`` ``(queue, kind)``, 0 included, so that a
    count falling to zero shows as 0 rather than as a series that vanishes; finished statuses
    only while their count is known."""
    statuses = [s.value for s in JobStatus if store.final is not None or not s.is_final]
    counts: JobCounts = {**store.live.counts, **(store.final or {})}
    seen = {(queue, kind) for queue, kind, _ in counts}
    family = GaugeMetricFamily(
        "conveyor_jobs",
        "Job rows in PostgreSQL by queue, kind and status",
        labels=["queue", "kind", "status"],
    )
    for queue, kind in sorted(seen | known):
        for status in statuses:
            family.add_metric([queue, kind, status], counts.get((queue, kind, status), 0))
    return family


def combined_families(rabbit: RabbitView, store: StoreView, queues: Iterable[str]) -> Iterator[Metric]:
    """Delayed jobs (held in PostgreSQL and in ``.DQ``) and drift, which need both sources."""
    delayed = _gauge(
        "conveyor_delayed_jobs", "Messages waiting for their due time: held in PostgreSQL, or in <queue>.DQ"
    )
    drift = _gauge(
        "conveyor_jobs_drift",
        "Jobs due for longer than the grace period, neither held nor matched by any message in RabbitMQ",
    )
    for queue in queues:
        delayed.add_metric([queue], store.live.held.get(queue, 0) + rabbit.delayed.get(queue, 0))
        drift.add_metric([queue], max(0, store.live.unheld_due.get(queue, 0) - rabbit.messages(queue)))
    yield from (delayed, drift)


def worker_families(replicas: int, processes: int) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "conveyor_workers_up",
        "Worker replicas (conveyor worker commands) with a live heartbeat",
        value=replicas,
    )
    yield GaugeMetricFamily(
        "conveyor_worker_processes_up", "Worker processes with a live heartbeat", value=processes
    )


def _gauge(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=["queue"])


def _age(now: datetime, since: datetime | None) -> float:
    return 0.0 if since is None else round(max(0.0, (now - since).total_seconds()), 3)


# ---------------------------------------------------------------- HTTP


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per request: Prometheus scrapes every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def exporter_app(registry: CollectorRegistry) -> Callable[..., Iterable[bytes]]:
    """The WSGI application: ``/metrics`` from ``registry``, ``/healthz`` (200 while serving), 404."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics or /healthz\n"]

    return app


def make_exporter_server(collector: ClusterCollector, host: str, port: int) -> WSGIServer:
    """An HTTP server of ``collector`` bound to ``host:port`` (port 0: a free one); not yet serving.

    Raises:
        OSError: the address cannot be bound.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return make_server(host, port, exporter_app(registry), server_class=_Server, handler_class=_QuietHandler)
