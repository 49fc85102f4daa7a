"""Prometheus metrics of a worker replica: the families, and the hooks that feed them.

The supervisor (``workers/supervisor.py``) serves ``/metrics`` for the whole replica from a
private ``prometheus_client`` multiprocess directory: each worker process writes its values
there, and the supervisor adds them up. A process turns its metrics on with :func:`enable`
(``workers/process.py``, when ``CONVEYOR_METRICS_PORT`` is set); until then every hook here
is a no-op that costs one attribute test, and ``prometheus_client`` is not even imported.

``prometheus_client`` picks its multiprocess value class when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``: the supervisor sets that variable before it forks, and this
module imports the library only in :func:`enable`, after the fork.

No label carries a job id: a label value per job would make a series per job.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Histogram buckets in seconds: milliseconds resolved (a no-op job's p50 is about 2 ms) up to 10 min.
BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
#: Buckets of the store writer's batch sizes (writes per transaction, at most ``MAX_BATCH``).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

#: The file a worker process refreshes every second while all its consumers are attached
#: (``health-<pid>``, holding ``1``, or ``0`` while one is not): what ``/healthz`` reads.
HEALTH_FILE = "health-{pid}"


@dataclass(frozen=True)
class Family:
    """One metric family as ``/metrics`` shows it."""

    #: The exposed name (a counter's ends in ``_total``).
    name: str
    type: str
    labels: tuple[str, ...]
    help: str
    #: How the supervisor adds up the processes' values of a gauge (``livesum``: live processes only).
    multiprocess_mode: str = ""
    buckets: tuple[float, ...] = ()


_QK = ("queue", "kind")

#: Every family a worker replica exports (the docs page lists each; a unit test checks it).
FAMILIES: tuple[Family, ...] = (
    Family(
        "conveyor_job_attempts_finished_total",
        "counter",
        (*_QK, "outcome"),
        "Attempts that ended in this replica, by outcome.",
    ),
    Family("conveyor_job_run_seconds", "histogram", _QK, "Run time of every attempt.", buckets=BUCKETS),
    Family(
        "conveyor_job_queue_wait_seconds",
        "histogram",
        _QK,
        "From enqueue (or a delayed job's or retry's due time) to the attempt's start.",
        buckets=BUCKETS,
    ),
    Family("conveyor_jobs_in_progress", "gauge", _QK, "Jobs being run now.", "livesum"),
    Family("conveyor_email_deliveries_total", "counter", ("outcome",), "Emails handed to SMTP, by outcome."),
    Family(
        "conveyor_messages_dead_lettered_total",
        "counter",
        ("queue",),
        "Messages sent to a dead-letter queue.",
    ),
    Family(
        "conveyor_duplicate_deliveries_skipped_total",
        "counter",
        _QK,
        "Messages skipped because their job had already ended (a redelivered or republished copy).",
    ),
    Family(
        "conveyor_orphans_resent_total", "counter", ("queue",), "Orphaned jobs whose message was sent again."
    ),
    Family(
        "conveyor_delayed_publish_lateness_seconds",
        "histogram",
        ("queue",),
        "How late a delayed message or retry was published after its due time.",
        buckets=BUCKETS,
    ),
    Family(
        "conveyor_outbox_published_total",
        "counter",
        ("queue",),
        "Outbox entries (jobs enqueued with session=) this replica's relays published.",
    ),
    Family(
        "conveyor_outbox_publish_lag_seconds",
        "histogram",
        ("queue",),
        "From an outbox entry's enqueue to its publication by a relay (confirmed by RabbitMQ).",
        buckets=BUCKETS,
    ),
    Family(
        "conveyor_email_rate_limit_wait_seconds",
        "histogram",
        (),
        "Time an email waited for the rate limit.",
        buckets=BUCKETS,
    ),
    Family(
        "conveyor_store_write_seconds",
        "histogram",
        (),
        "Duration of one batched write of attempt starts and ends.",
        buckets=BUCKETS,
    ),
    Family(
        "conveyor_store_write_batch_size",
        "histogram",
        (),
        "Starts and ends written by one batched write.",
        buckets=BATCH_BUCKETS,
    ),
    Family("conveyor_worker_threads", "gauge", (), "Worker threads of the live processes.", "livesum"),
    Family("conveyor_worker_threads_busy", "gauge", (), "Worker threads handling a message now.", "livesum"),
    Family(
        "conveyor_worker_consuming",
        "gauge",
        (),
        "1 for each live worker process whose consumers are all attached, 0 otherwise (label pid).",
        "liveall",
    ),
)


class _Live:
    """The ``prometheus_client`` objects of this process, by family name, and what its jobs
    count between two ticks."""

    def __init__(self, directory: str | None) -> None:
        import prometheus_client as prom  # after the fork: the multiprocess value class

        self.directory = directory
        self.objects: dict[str, Any] = {}
        # A write of a multiprocess value takes a process-wide lock and an mmap write: an attempt
        # would make five. Attempts are tallied here instead and written once a second by
        # :func:`tick` (and by :func:`flush` as the process stops), as are the gauges.
        self.finished: dict[tuple[str, str, str], int] = {}
        self.run: dict[tuple[str, str], _Tally] = {}
        self.wait: dict[tuple[str, str], _Tally] = {}
        self.running: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()
        registry = prom.CollectorRegistry(auto_describe=True)
        for family in FAMILIES:
            name = family.name.removesuffix("_total")
            common: dict[str, Any] = {"labelnames": family.labels, "registry": registry}
            if family.type == "counter":
                self.objects[family.name] = prom.Counter(name, family.help, **common)
            elif family.type == "histogram":
                self.objects[family.name] = prom.Histogram(
                    name, family.help, buckets=family.buckets, **common
                )
            else:
                mode: Any = family.multiprocess_mode  # checked by the unit test of the families
                self.objects[family.name] = prom.Gauge(name, family.help, multiprocess_mode=mode, **common)
        self.registry = registry

    def take(
        self,
    ) -> tuple[dict[tuple[str, str, str], int], dict[tuple[str, str], _Tally], dict[tuple[str, str], _Tally]]:
        """The attempts tallied since the last call, leaving empty tallies behind."""
        with self.lock:
            taken = (self.finished, self.run, self.wait)
            self.finished, self.run, self.wait = {}, {}, {}
        return taken


class _Tally:
    """A histogram child's observations not yet written: a count per bucket (``+Inf`` last) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1  # the first bucket whose bound >= value
        self.total += value

    def write(self, child: Any) -> None:
        """Add the tally to a ``prometheus_client`` histogram child, as ``observe`` would have.

        ``_sum`` and ``_buckets`` are the child's values (``observe`` increments one bucket and
        the sum); a unit test compares the result with ``observe`` on every release in range.
        """
        child._sum.inc(self.total)
        for index, count in enumerate(self.counts):
            if count:
                child._buckets[index].inc(count)


_live: _Live | None = None


def enable(directory: str | None) -> None:
    """Turn this process's metrics on; ``directory`` is the replica's multiprocess directory
    (None: values stay in this process, e.g. a test's registry)."""
    global _live
    _live = _Live(directory)


def disable() -> None:
    """Turn metrics off again (tests)."""
    global _live
    _live = None


def enabled() -> bool:
    return _live is not None


def registry() -> Any:
    """This process's registry (what a test reads when no multiprocess directory is used)."""
    return None if _live is None else _live.registry


def _get(name: str) -> Any:
    assert _live is not None
    return _live.objects[name]


# ------------------------------------------------------------------ hooks (no-ops until enabled)


def attempt_finished(queue: str, kind: str, outcome: str, run_seconds: float, wait_seconds: float) -> None:
    """One attempt ended in this process, with ``outcome``; written at the next :func:`tick`."""
    live = _live
    if live is None:
        return
    with live.lock:
        key = (queue, kind, outcome)
        live.finished[key] = live.finished.get(key, 0) + 1
        labels = (queue, kind)
        run = live.run.get(labels) or live.run.setdefault(labels, _Tally())
        run.add(max(run_seconds, 0.0))
        wait = live.wait.get(labels) or live.wait.setdefault(labels, _Tally())
        wait.add(max(wait_seconds, 0.0))


def flush() -> None:
    """Write the attempts tallied since the last write (each second, and as the process stops)."""
    if _live is None:
        return
    finished, run, wait = _live.take()
    for key, count in finished.items():
        _get("conveyor_job_attempts_finished_total").labels(*key).inc(count)
    for labels, tally in run.items():
        tally.write(_get("conveyor_job_run_seconds").labels(*labels))
    for labels, tally in wait.items():
        tally.write(_get("conveyor_job_queue_wait_seconds").labels(*labels))


def in_progress(queue: str, kind: str, change: int) -> None:
    """A worker thread took (+1) or let go of (-1) a message of ``queue`` and ``kind``; the
    gauges are written at the next :func:`tick`."""
    if _live is None:
        return
    with _live.lock:
        _live.running[(queue, kind)] = _live.running.get((queue, kind), 0) + change


def worker_threads(threads: int) -> None:
    if _live is not None:
        _get("conveyor_worker_threads").set(threads)


def email_delivery(outcome: str) -> None:
    """An email was ``sent``, found ``duplicate`` (sent by an earlier run), or ``failed``."""
    if _live is not None:
        _get("conveyor_email_deliveries_total").labels(outcome).inc()


def dead_lettered(queue: str) -> None:
    if _live is not None:
        _get("conveyor_messages_dead_lettered_total").labels(queue).inc()


def duplicate_skipped(queue: str, kind: str) -> None:
    if _live is not None:
        _get("conveyor_duplicate_deliveries_skipped_total").labels(queue, kind).inc()


def orphan_resent(queue: str) -> None:
    if _live is not None:
        _get("conveyor_orphans_resent_total").labels(queue).inc()


def delayed_published(queue: str, due_ms: object) -> None:
    """A held message was published; ``due_ms`` is its due time (ms since 1970) when it carries one."""
    if _live is not None and isinstance(due_ms, int | float) and not isinstance(due_ms, bool):
        lateness = max(time.time() - due_ms / 1000, 0.0)
        _get("conveyor_delayed_publish_lateness_seconds").labels(queue).observe(lateness)


def outbox_published(queue: str, enqueued_ms: object) -> None:
    """A relay published an outbox entry; ``enqueued_ms`` is its message's timestamp (ms since 1970)."""
    if _live is not None:
        _get("conveyor_outbox_published_total").labels(queue).inc()
        if isinstance(enqueued_ms, int | float) and not isinstance(enqueued_ms, bool):
            lag = max(time.time() - enqueued_ms / 1000, 0.0)
            _get("conveyor_outbox_publish_lag_seconds").labels(queue).observe(lag)


def rate_limit_waited(seconds: float) -> None:
    if _live is not None:
        _get("conveyor_email_rate_limit_wait_seconds").observe(seconds)


def store_batch_written(size: int, seconds: float) -> None:
    """The store writer's observer (``BatchedAttemptStore(observe=…)``): one batch written."""
    if _live is not None:
        _get("conveyor_store_write_seconds").observe(seconds)
        _get("conveyor_store_write_batch_size").observe(size)


def tick(attached: bool) -> None:
    """Called every second by a worker process, with whether all its consumers are attached:
    writes the attempts tallied since the last tick, the gauges and the process's health report."""
    if _live is None:
        return
    flush()
    with _live.lock:
        running = dict(_live.running)
    for labels, count in running.items():
        _get("conveyor_jobs_in_progress").labels(*labels).set(count)
    _get("conveyor_worker_threads_busy").set(sum(running.values()))
    _get("conveyor_worker_consuming").set(1 if attached else 0)
    if _live.directory is not None:
        path = Path(_live.directory, HEALTH_FILE.format(pid=os.getpid()))
        temporary = path.with_suffix(".tmp")
        temporary.write_text("1" if attached else "0")
        temporary.replace(path)  # atomic: the supervisor never reads half a file
