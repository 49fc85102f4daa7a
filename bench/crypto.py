"""Encryption at rest: the cost of ``CONVEYOR_ENCRYPTION_KEYS``, Conveyor against itself.

Each run measures the same work twice on the same services, once with a key (payloads,
results, errors, deliveries sealed with AES-256-GCM) and once without, in alternating order:

- enqueue: ``client.enqueue("noop")`` one at a time (publisher confirms, the row written
  first), for a quarter of the jobs;
- enqueue_many: ``client.enqueue_many`` of the N no-op jobs, 500 per call (the backlog);
- drain: ``conveyor worker -p 2 -t 8 --queues default`` runs the backlog; rate = N ÷ (last
  ``finished_at`` − first ``started_at``);
- email: ``send_email`` jobs (the ``welcome`` template) from a backlog to a local SMTP server,
  ``-p 1 -t 8 --queues email``, clocked at the server as in the email section.

The "speed ratio" is encrypted ÷ in the clear: 0.95 means encryption costs 5 %. Runs on its own::

    python bench/compare.py --only crypto --runs 1 --jobs 2000 --emails 200
"""

from __future__ import annotations

import time
from typing import Any

from bench.emails import SmtpSink
from bench.harness import BenchFailed, new_client, queue_outcomes, running_worker, sql_connect, wait_succeeded
from bench.sections import Comparison

#: Jobs per ``enqueue_many`` call.
BATCH = 500
#: A fixed key: the bench measures the cost, the key protects nothing here.
KEY = "bench:" + "QmVuY2hCZW5jaEJlbmNoQmVuY2hCZW5jaEJlbmNoQmU="


class CryptoSection:
    name = "crypto"
    title = "Encryption at rest: Conveyor with CONVEYOR_ENCRYPTION_KEYS against Conveyor without"
    sides = ("encrypted", "in the clear")

    def __init__(
        self, settings: dict[str, str], rabbit: Any, jobs: int, emails: int, threads: int = 8
    ) -> None:
        self.settings = dict(settings)
        self.rabbit = rabbit
        self.jobs = jobs
        self.singles = max(jobs // 4, 1)
        self.emails = emails
        self.threads = threads
        self.queues = [f"{settings['namespace']}.{q}" for q in ("default", "email")]
        self.sink = SmtpSink()
        both = "the same, with CONVEYOR_ENCRYPTION_KEYS set"
        self.comparisons = [
            Comparison("enqueue", "client.enqueue, one at a time", "jobs/s", both, "no keys"),
            Comparison("enqueue_many", f"client.enqueue_many, {BATCH} per call", "jobs/s", both, "no keys"),
            Comparison("drain", f"no-op drain, 2 processes × {threads} threads", "jobs/s", both, "no keys"),
            Comparison("email", f"emails/s, 1 process × {threads} threads", "emails/s", both, "no keys"),
        ]

    def config(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "single_enqueues": self.singles,
            "emails": self.emails,
            "threads": self.threads,
        }

    def setup(self) -> None:
        self.sink.start()
        self.settings["smtp_url"] = f"smtp://127.0.0.1:{self.sink.port}"
        self.sql = sql_connect(self.settings["database_url"])

    def close(self) -> None:
        self.sink.stop()
        if hasattr(self, "sql"):
            self._reset()
            self.sql.close()

    def _reset(self) -> None:
        self.rabbit.purge([f"{q}{suffix}" for q in self.queues for suffix in ("", ".DQ", ".XQ")])
        for queue in self.queues:
            self.sql.execute("DELETE FROM jobs WHERE queue = %s", (queue,))
        self.sink.reset()

    def measure(self, run: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        # Alternating which goes first keeps a drifting machine from favouring one side.
        sides = [("conveyor", True), ("baseline", False)]
        for side, encrypted in sides if run % 2 else sides[::-1]:
            settings = {**self.settings, "encryption_keys": KEY} if encrypted else self.settings
            for key, value in self._one_side(settings).items():
                metrics[f"{key}.{side}"] = value
        return metrics

    def _one_side(self, settings: dict[str, str]) -> dict[str, float]:
        self._reset()
        queue = self.queues[0]
        with new_client(settings) as client:
            started = time.perf_counter()
            for _ in range(self.singles):
                client.enqueue("noop")
            enqueue = self.singles / (time.perf_counter() - started)
            self._reset()
            started = time.perf_counter()
            for first in range(0, self.jobs, BATCH):
                client.enqueue_many("noop", [{}] * min(BATCH, self.jobs - first))
            enqueue_many = self.jobs / (time.perf_counter() - started)
        args = ("--processes", "2", "--threads", str(self.threads), "--queues", "default")
        with running_worker(settings, *args) as worker:
            last = wait_succeeded(lambda: queue_outcomes(self.sql, queue), self.jobs, worker, "no-op jobs")
        row = self.sql.execute(
            "SELECT extract(epoch FROM min(started_at)) FROM jobs WHERE queue = %s", (queue,)
        ).fetchone()
        assert row is not None
        drain = self.jobs / max(last - float(row[0]), 1e-6)
        return {
            "enqueue": enqueue,
            "enqueue_many": enqueue_many,
            "drain": drain,
            "email": self._emails(settings),
        }

    def _emails(self, settings: dict[str, str]) -> float:
        self._reset()
        queue = self.queues[1]
        with new_client(settings) as client:
            for first in range(0, self.emails, BATCH):
                payloads = [
                    {"to": f"user{i}@example.com", "template": "welcome", "context": {"name": f"User {i}"}}
                    for i in range(first, min(first + BATCH, self.emails))
                ]
                client.enqueue_many("email", payloads)
        args = ("--processes", "1", "--threads", str(self.threads), "--queues", "email")
        with running_worker(settings, *args) as worker:
            last = wait_succeeded(lambda: queue_outcomes(self.sql, queue), self.emails, worker, "email jobs")
        arrivals = self.sink.handler.arrivals
        if len(arrivals) != self.emails:
            raise BenchFailed(f"the SMTP server got {len(arrivals)} emails, not {self.emails}")
        return (self.emails - 1) / max(max(last, *arrivals) - min(arrivals), 1e-6)
