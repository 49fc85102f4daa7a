"""The transactional outbox: jobs committed with ``enqueue(..., session=S)`` and published by the
relays of a running replica, against ``client.enqueue_many`` of the same jobs.

Each run does the same N no-op jobs three ways, in rotating order, while a pika consumer takes
every message off the queue as it arrives, and ``conveyor worker -p 2 -t 2 --queues email`` runs
(it consumes nothing of the benchmark's queue: it is there for its two relays):

- outbox, bulk: ``enqueue_many(..., session=S)``, :data:`BATCH` jobs a transaction, one thread
  (rows and entries by ``COPY`` in the application's transaction);
- outbox, one call a job: :data:`THREADS` application threads, each committing transactions of
  :data:`PER_TX` ``enqueue(..., session=S)`` calls;
- ``enqueue_many``: the same jobs in calls of :data:`BATCH` from one thread (rows by ``COPY``,
  pipelined confirms): Conveyor's fastest way in, and the baseline of both.

Rate = N ÷ (last message's arrival at the consumer − start). Commit-to-publish latency is, for
each job of an outbox side, its arrival at the consumer − the return of its transaction's
commit (an upper bound of the publish itself), under that side's load. Runs on its own::

    python bench/compare.py --only outbox --runs 3 --jobs 5000
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from typing import Any

import pika
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from bench.harness import BenchFailed, new_client, running_worker, sql_connect
from bench.sections import Comparison

#: Application threads committing on the outbox side, and jobs per transaction.
THREADS = 4
PER_TX = 50
#: Jobs per ``enqueue_many`` call on the baseline side.
BATCH = 500
#: Seconds the last message may take to arrive before the run fails.
ARRIVAL_TIMEOUT = 60.0


class Arrivals(threading.Thread):
    """Consumes the queue, recording when each message arrived (epoch seconds, by message id)."""

    def __init__(self, amqp_url: str, queue: str) -> None:
        super().__init__(daemon=True)
        self.amqp_url = amqp_url
        self.queue = queue
        self.at: dict[str, float] = {}
        self.ready = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            channel = connection.channel()
            channel.basic_qos(prefetch_count=2000)
            channel.basic_consume(self.queue, self._arrived, auto_ack=True)
            self.ready.set()
            while not self.stopping.is_set():
                connection.process_data_events(time_limit=0.05)
        finally:
            connection.close()

    def _arrived(self, _channel: Any, _method: Any, _properties: Any, body: bytes) -> None:
        self.at[json.loads(body)["message_id"]] = time.time()

    def wait_for(self, count: int) -> float:
        """The last arrival once ``count`` messages have arrived."""
        deadline = time.monotonic() + ARRIVAL_TIMEOUT
        while len(self.at) < count:
            if time.monotonic() > deadline:
                raise BenchFailed(f"{len(self.at)} of {count} messages arrived in {ARRIVAL_TIMEOUT:g} s")
            time.sleep(0.005)
        return max(self.at.values())


class OutboxSection:
    name = "outbox"
    title = "Transactional enqueue: session= and the relays against enqueue_many"
    sides = ("outbox (session=)", "enqueue_many")

    def __init__(self, settings: dict[str, str], rabbit: Any, jobs: int) -> None:
        self.settings = dict(settings)
        self.rabbit = rabbit
        self.jobs = jobs
        self.queue = f"{settings['namespace']}.default"
        self.comparisons = [
            Comparison(
                "throughput",
                "no-op jobs committed (or enqueued) and published, in bulk",
                "jobs/s",
                f"enqueue_many(session=), {BATCH} a transaction, 2 relays",
                f"enqueue_many, {BATCH} a call",
            ),
            Comparison(
                "per_call",
                "no-op jobs committed (or enqueued) and published, one call a job",
                "jobs/s",
                f"enqueue(session=), {THREADS} threads, {PER_TX} jobs a transaction, 2 relays",
                f"enqueue_many, {BATCH} a call",
            ),
        ]

    def config(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "threads": THREADS, "jobs_per_transaction": PER_TX, "batch": BATCH}

    def setup(self) -> None:
        self.sql = sql_connect(self.settings["database_url"])
        self.engine = create_engine(self.settings["database_url"], pool_size=THREADS)
        self.client = new_client(self.settings)
        self.client.enqueue_many("noop", [{}])  # declares the queue
        self._reset()

    def close(self) -> None:
        if hasattr(self, "sql"):
            self._reset()
            self.sql.close()
            self.client.close()
            self.engine.dispose()

    def _reset(self) -> None:
        self.rabbit.purge([f"{self.queue}{suffix}" for suffix in ("", ".DQ", ".XQ")])
        self.sql.execute("DELETE FROM jobs WHERE queue = %s", (self.queue,))

    def measure(self, run: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        worker_args = ["--processes", "2", "--threads", "2", "--queues", "email"]
        with running_worker(self.settings, *worker_args):
            self._warm_up()
            sides = [self._outbox_bulk, self._outbox_calls, self._enqueue_many]
            # Rotating which goes first keeps a drifting machine from favouring one side.
            for side in sides[run % 3 :] + sides[: run % 3]:
                self._reset()
                metrics.update(side())
        metrics["per_call.baseline"] = metrics["throughput.baseline"]
        return metrics

    def _warm_up(self) -> None:
        """Until the replica's relays publish (imports and connections behind them)."""
        with self._consuming() as arrivals:
            with Session(self.engine) as session, session.begin():
                self.client.enqueue("noop", session=session)
            arrivals.wait_for(1)

    def _outbox_bulk(self) -> dict[str, float]:
        commits: dict[str, float] = {}
        with self._consuming() as arrivals:
            began = time.time()
            for first in range(0, self.jobs, BATCH):
                with Session(self.engine) as session, session.begin():
                    payloads = [{}] * min(BATCH, self.jobs - first)
                    ids = [job.id for job in self.client.enqueue_many("noop", payloads, session=session)]
                commits.update(dict.fromkeys(ids, time.time()))
            last = arrivals.wait_for(self.jobs)
            return {"throughput.conveyor": self.jobs / (last - began), **_lags("bulk", arrivals, commits)}

    def _outbox_calls(self) -> dict[str, float]:
        commits: dict[str, float] = {}
        errors: list[BaseException] = []

        def application(count: int) -> None:
            try:
                for first in range(0, count, PER_TX):
                    with Session(self.engine) as session, session.begin():
                        ids = [
                            self.client.enqueue("noop", session=session).id
                            for _ in range(min(PER_TX, count - first))
                        ]
                    committed = time.time()
                    commits.update(dict.fromkeys(ids, committed))
            except BaseException as exc:
                errors.append(exc)

        shares = [self.jobs // THREADS + (i < self.jobs % THREADS) for i in range(THREADS)]
        with self._consuming() as arrivals:
            began = time.time()
            threads = [threading.Thread(target=application, args=(n,)) for n in shares]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if errors:
                raise BenchFailed(f"an application thread failed: {errors[0]!r}")
            last = arrivals.wait_for(self.jobs)
            return {"per_call.conveyor": self.jobs / (last - began), **_lags("calls", arrivals, commits)}

    def _enqueue_many(self) -> dict[str, float]:
        with self._consuming() as arrivals:
            began = time.time()
            for first in range(0, self.jobs, BATCH):
                self.client.enqueue_many("noop", [{}] * min(BATCH, self.jobs - first))
            last = arrivals.wait_for(self.jobs)
        return {"throughput.baseline": self.jobs / (last - began)}

    def _consuming(self) -> _Consuming:
        return _Consuming(self.settings["broker_url"], self.queue)


def _lags(side: str, arrivals: Arrivals, commits: dict[str, float]) -> dict[str, float]:
    """Commit-to-publish p50, p99 and max (ms) of one side's jobs."""
    lags = sorted(arrivals.at[i] - commits[i] for i in commits)
    return {
        f"{side}_commit_to_publish_p50_ms": statistics.median(lags) * 1000,
        f"{side}_commit_to_publish_p99_ms": lags[max(int(len(lags) * 0.99) - 1, 0)] * 1000,
        f"{side}_commit_to_publish_max_ms": lags[-1] * 1000,
    }


class _Consuming:
    """A running :class:`Arrivals` for a ``with`` block."""

    def __init__(self, amqp_url: str, queue: str) -> None:
        self.arrivals = Arrivals(amqp_url, queue)

    def __enter__(self) -> Arrivals:
        self.arrivals.start()
        if not self.arrivals.ready.wait(10):
            raise BenchFailed("the consumer did not start")
        return self.arrivals

    def __exit__(self, *_exc: object) -> None:
        self.arrivals.stopping.set()
        self.arrivals.join(timeout=10)
