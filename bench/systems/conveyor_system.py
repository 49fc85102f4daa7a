"""(d) Conveyor: ``noop`` jobs with full lifecycle recording in PostgreSQL.

Workers: ``conveyor worker -p P -t T --queues default`` (namespace ``bench``, database
``conveyor_bench``): they serve the no-op queue only, as the other systems' workers do.
Producer: :class:`producers.Client` — ``enqueue`` one job at a time (row written, message
confirmed), and ``enqueue_many`` in batches of :data:`BATCH` where the client has it.
Completions are counted from PostgreSQL: ``jobs`` rows of the bench queues with status
``succeeded`` (their ``finished_at``); a probe's latency is its row's ``started_at`` minus the
time just before ``enqueue``.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import psycopg

from bench.harness import prepare_database, running_worker
from bench.systems.base import NAMESPACE, Completions, Config, System
from jobs.settings import Settings
from producers import Client

#: Jobs per ``enqueue_many`` call.
BATCH = 500
QUEUE = f"{NAMESPACE}.default"


class ConveyorSystem(System):
    key = "conveyor"
    label = "Conveyor"
    queue = QUEUE

    def __init__(self, config: Config, rabbit: Any) -> None:
        super().__init__(config, rabbit)
        self.description = (
            f"conveyor worker -p {config.processes} -t {config.threads} --queues default "
            f"(prefetch {config.prefetch} per process), lifecycle in PostgreSQL"
        )
        self.settings = {
            "broker_url": config.amqp_url,
            "database_url": config.database_url,
            "redis_url": config.redis_url,
            "namespace": NAMESPACE,
            # Its default for the no-op queue too, set so that every system gets the same window.
            "prefetch": str(config.prefetch_per_thread),
        }
        self.producers: dict[str, str] = {"each": "Client.enqueue"}
        self._client: Client | None = None
        self._sql: psycopg.Connection[Any] | None = None
        self._probes: list[tuple[str, float]] = []
        self._workers = ExitStack()

    @property
    def expected_consumers(self) -> int:
        return self.config.processes

    @property
    def queues(self) -> list[str]:
        names = [f"{NAMESPACE}.{q}" for q in ("default", "email", "reports", "images")]
        return [f"{name}{suffix}" for name in names for suffix in ("", ".DQ", ".XQ")]

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _new_client(self) -> Client:
        env = {f"CONVEYOR_{name.upper()}": value for name, value in self.settings.items()}
        return Client(Settings.from_env(env))

    @property
    def sql(self) -> psycopg.Connection[Any]:
        if self._sql is None or self._sql.closed:
            self._sql = psycopg.connect(self.config.database_url.replace("+psycopg", ""), autocommit=True)
        return self._sql

    def setup(self) -> None:
        prepare_database(self.config.database_url)
        if hasattr(self.client, "enqueue_many"):
            self.producers["bulk"] = f"Client.enqueue_many, batches of {BATCH}"

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        if self._sql is not None:
            self._sql.close()

    def reconnect(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        # A new Client now, outside the timing; its connections open on first use, as every system's do.
        self._client = self._new_client()

    def reset(self) -> None:
        self.rabbit.purge(self.queues)
        # job_attempts (and the other per-job tables) follow by ON DELETE CASCADE.
        self.sql.execute("DELETE FROM jobs WHERE queue LIKE %s", (f"{NAMESPACE}.%",))
        self._probes = []

    def vacuum(self) -> None:
        """Between runs: the same table state for each (dead rows of the last run cleared)."""
        self.sql.execute("VACUUM ANALYZE jobs")
        self.sql.execute("VACUUM ANALYZE job_attempts")
        self.sql.execute("VACUUM ANALYZE job_claims")  # a row a job, deleted at its end

    def enqueue(self, count: int, producer: str, progress: Callable[[int], None]) -> None:
        client = self.client
        if producer == "bulk":
            done = 0
            while done < count:
                size = min(BATCH, count - done)
                client.enqueue_many("noop", [{} for _ in range(size)])  # type: ignore[attr-defined]
                done += size
                if done % 1000 < size:
                    progress(done)
            return
        for i in range(count):
            client.enqueue("noop")
            if i % 1000 == 999:
                progress(i + 1)

    def send_probe(self) -> None:
        before = time.time()
        job = self.client.enqueue("noop")
        self._probes.append((job.id, before))

    def completions(self) -> Completions:
        row = self.sql.execute(
            "SELECT count(*), extract(epoch FROM min(finished_at)), extract(epoch FROM max(finished_at)) "
            "FROM jobs WHERE queue = %s AND status = 'succeeded'",
            (QUEUE,),
        ).fetchone()
        assert row is not None
        count, first, last = row
        return Completions(int(count), float(first) if first else None, float(last) if last else None)

    def probe_latencies(self) -> list[float]:
        if not self._probes:
            return []
        sent = dict(self._probes)
        rows = self.sql.execute(
            "SELECT id::text, extract(epoch FROM started_at) FROM jobs "
            "WHERE id::text = ANY(%s) AND status = 'succeeded' AND started_at IS NOT NULL",
            (list(sent),),
        ).fetchall()
        return [(float(started) - sent[job_id]) * 1000 for job_id, started in rows]

    def start_workers(self) -> list[subprocess.Popen[bytes]]:
        args = ("-p", str(self.config.processes), "-t", str(self.config.threads), "--queues", "default")
        return [self._workers.enter_context(running_worker(self.settings, *args))]

    def stop_workers(self, workers: list[subprocess.Popen[bytes]]) -> None:
        self._workers.close()
