"""`conveyor exporter`: its numbers against RabbitMQ's management API and PostgreSQL, drift made
for real by purging a queue, and services that are down."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pika
import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from jobs.admin.exporter import ClusterCollector, ExporterOptions
from jobs.schedule.leader import LeaderLock
from jobs.settings import Settings
from jobs.store import Database
from producers import Client
from tests.helpers import AMQP_URL, ROOT, WorkerProcess, eventually, observe

pytestmark = pytest.mark.integration

API_URL = "http://guest:guest@127.0.0.1:15672"
#: One sample of ``/metrics``: (family, sorted labels) → value.
Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Exporter:
    """A `conveyor exporter --port 0` subprocess and its scrapes."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "exporter", "--port", "0", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        banner = eventually(lambda: next((line for line in self.lines if "serving http://" in line), None))
        self.base = banner.split("serving ")[1].split("/metrics")[0]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            observe(line, "output of `conveyor exporter`")
            self.lines.append(line.rstrip("\n"))

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=20) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def scrape(self) -> Sample:
        status, body = self.get("/metrics")
        assert status == 200, body
        return parse(body)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self._reader.join(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()


def parse(body: str) -> Sample:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(sample: Sample, name: str, **labels: str) -> float | None:
    return sample.get((name, tuple(sorted(labels.items()))))


def family(sample: Sample, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in sample.items() if n == name}


@pytest.fixture
def api_env(service_env: dict[str, str]) -> dict[str, str]:
    return {**service_env, "CONVEYOR_RABBITMQ_API_URL": API_URL}


@pytest.fixture
def start_exporter() -> Iterator[Any]:
    started: list[Exporter] = []

    def factory(env: dict[str, str], *args: str) -> Exporter:
        exporter = Exporter(env, *args)
        started.append(exporter)
        return exporter

    yield factory
    for exporter in started:
        exporter.stop()
        assert "Traceback" not in "\n".join(exporter.lines), "\n".join(exporter.lines)


def management(queue: str) -> dict[str, Any]:
    """What the management API says of one queue now."""
    request = urllib.request.Request(f"http://127.0.0.1:15672/api/queues/%2F/{queue}")
    request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.load(response))


def rows_by_group(db: Database, namespace: str) -> dict[tuple[str, str, str], int]:
    query = text("SELECT queue, kind, status, count(*) FROM jobs WHERE queue LIKE :ns GROUP BY 1, 2, 3")
    with db.session() as session:
        return {(q, k, s): int(n) for q, k, s, n in session.execute(query, {"ns": f"{namespace}.%"})}


def scraped(exporter: Exporter, queue: str, ready: int, consumers: int | None = None) -> Sample | None:
    """A scrape once it shows ``ready`` messages in ``queue`` (RabbitMQ's statistics lag a little),
    and ``consumers`` consumers when given (a loaded worker may be reconnecting its consumer)."""
    sample = exporter.scrape()
    if value(sample, "conveyor_queue_messages_ready", queue=queue) != ready:
        return None
    if consumers is not None and value(sample, "conveyor_queue_consumers", queue=queue) != consumers:
        return None
    return sample


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _states_reached(client: Client, jobs: dict[str, str]) -> bool:
    return all(client.get(job_id).status == status for job_id, status in jobs.items())


def test_the_exporter_equals_rabbitmq_and_postgresql_for_jobs_in_every_state(
    settings: Settings,
    db: Database,
    client: Client,
    api_env: dict[str, str],
    start_worker: WorkerProcess.Factory,
    start_exporter: Any,
) -> None:
    ns, default = settings.namespace, settings.queue_name("default")
    worker = start_worker("--processes", "1", "--threads", "1")
    ends = {
        client.enqueue("noop").id: "succeeded",
        client.enqueue("noop", permanent=True).id: "failed",  # and a dead letter in .XQ
        client.enqueue("noop", fail_attempts=5, min_backoff=3600, max_backoff=3600).id: "retrying",
    }
    later = client.enqueue("noop", delay=3600)
    cancelled = client.enqueue("noop", delay=3600)
    assert client.cancel(cancelled.id) == "cancelled"
    eventually(lambda: _states_reached(client, ends), timeout=30)
    busy = client.enqueue("noop", sleep=60)  # holds the only thread: what follows waits
    eventually(lambda: client.get(busy.id).status == "running")
    waiting = [client.enqueue("noop").id for _ in range(5)]
    leader = LeaderLock(settings.database_url, ns, "replica-under-test")
    assert leader.hold()
    exporter = start_exporter(api_env, "--final-counts-every", "0", "--drift-grace", "0")
    try:
        # RabbitMQ samples its statistics every few seconds: wait until the API shows the state.
        def settled() -> dict[str, Any] | None:
            queue = management(default)
            backlog = queue.get("messages_ready", 0) + queue.get("messages_unacknowledged", 0)
            return queue if queue.get("consumers") == 1 and backlog == len(waiting) + 1 else None

        rabbit = eventually(settled, timeout=30)
        sample = eventually(lambda: scraped(exporter, default, rabbit["messages_ready"], 1), timeout=30)
        sampled_at = datetime.now(UTC)  # ages are compared as of the scrape, not of the asserts
        rabbit = management(default)
        assert value(sample, "conveyor_queue_messages_ready", queue=default) == rabbit["messages_ready"]
        assert (
            value(sample, "conveyor_queue_messages_unacked", queue=default)
            == rabbit["messages_unacknowledged"]
        )
        assert value(sample, "conveyor_queue_consumers", queue=default) == rabbit["consumers"] == 1
        dead = management(f"{default}.XQ")["messages"]
        assert value(sample, "conveyor_dead_letters", queue=default) == dead == 1
        held = rows_by_group(db, ns)
        exported = {
            (dict(labels)["queue"], dict(labels)["kind"], dict(labels)["status"]): int(v)
            for labels, v in family(sample, "conveyor_jobs").items()
            if v
        }
        assert exported == held
        assert held[(default, "noop", "queued")] == len(waiting) + 1  # and the delayed one
        with db.session() as session:
            delayed_rows = session.execute(
                text("SELECT count(*) FROM delayed_messages WHERE queue = :q"), {"q": default}
            ).scalar_one()
        assert client.get(later.id).status == "queued"
        assert value(sample, "conveyor_delayed_jobs", queue=default) == delayed_rows == 2  # later, retry
        assert value(sample, "conveyor_jobs_drift", queue=default) == 0
        running_for = (sampled_at - client.get(busy.id).info.started_at).total_seconds()  # type: ignore[operator]
        assert abs(value(sample, "conveyor_running_oldest_seconds", queue=default) - running_for) < 3  # type: ignore[operator]
        # The oldest job due to run: the delayed one is not due yet.
        oldest = min(client.get(job_id).info.created_at for job_id in waiting)
        waited_for = (sampled_at - oldest).total_seconds()
        assert abs(value(sample, "conveyor_queue_oldest_wait_seconds", queue=default) - waited_for) < 3  # type: ignore[operator]
        assert value(sample, "conveyor_workers_up") == 1
        assert value(sample, "conveyor_worker_processes_up") == 1
        assert value(sample, "conveyor_scheduler_leader") == 1
        assert value(sample, "conveyor_scheduler_leader_info", leader="replica-under-test") == 1
        assert all(
            value(sample, "conveyor_exporter_up", source=s) == 1 for s in ("rabbitmq", "postgresql", "redis")
        )
        assert value(sample, "conveyor_jobs_final_age_seconds") == 0
    finally:
        leader.release()
        worker.terminate()


def test_jobs_whose_messages_were_purged_show_as_drift_once_past_the_grace_period(
    settings: Settings, db: Database, client: Client, api_env: dict[str, str], start_exporter: Any
) -> None:
    default = settings.queue_name("default")
    for _ in range(3):
        client.enqueue("noop")
    client.enqueue("noop", delay=3600)  # held in PostgreSQL: never drift
    exporter = start_exporter(api_env, "--final-counts-every", "0", "--drift-grace", "0")
    before = eventually(lambda: scraped(exporter, default, 3), timeout=30)
    assert value(before, "conveyor_jobs_drift", queue=default) == 0

    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        assert connection.channel().queue_purge(default).method.message_count == 3
    finally:
        connection.close()
    after = eventually(lambda: scraped(exporter, default, 0), timeout=30)
    assert value(after, "conveyor_jobs_drift", queue=default) == 3
    assert value(after, "conveyor_jobs", queue=default, kind="noop", status="queued") == 4

    # Within the grace period the same jobs are not drift yet: their messages may be on the way.
    patient = Settings(
        broker_url=settings.broker_url,
        database_url=settings.database_url,
        namespace=settings.namespace,
        rabbitmq_api_url=API_URL,
    )
    options = ExporterOptions(drift_grace=3600, final_every=0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(patient, db, redis.Redis.from_url(patient.redis_url), options))
    assert value(parse(generate_latest(registry).decode()), "conveyor_jobs_drift", queue=default) == 0


def test_a_service_down_leaves_its_families_out_and_the_scrape_still_answers(
    settings: Settings, client: Client, api_env: dict[str, str], start_exporter: Any
) -> None:
    default = settings.queue_name("default")
    done = client.enqueue("noop")  # a row to count (no worker: it stays queued)
    nothing = f"127.0.0.1:{free_port()}"
    no_rabbit_no_redis = start_exporter(
        {
            **api_env,
            "CONVEYOR_RABBITMQ_API_URL": f"http://guest:guest@{nothing}",
            "CONVEYOR_REDIS_URL": f"redis://{nothing}/0",
        },
    )
    sample = no_rabbit_no_redis.scrape()
    assert value(sample, "conveyor_exporter_up", source="rabbitmq") == 0
    assert value(sample, "conveyor_exporter_up", source="redis") == 0
    assert value(sample, "conveyor_exporter_up", source="postgresql") == 1
    for absent in (
        "conveyor_queue_messages_ready",
        "conveyor_jobs_drift",
        "conveyor_delayed_jobs",
        "conveyor_workers_up",
    ):
        assert not family(sample, absent), absent
    assert value(sample, "conveyor_jobs", queue=default, kind="noop", status="queued") == 1

    # The finished jobs are counted in the background (the default): they join once counted.
    def finished_counted() -> Sample | None:
        sample = no_rabbit_no_redis.scrape()
        succeeded = value(sample, "conveyor_jobs", queue=default, kind="noop", status="succeeded")
        return sample if succeeded is not None else None

    counted = eventually(finished_counted)
    assert value(counted, "conveyor_jobs", queue=default, kind="noop", status="succeeded") == 0
    assert client.get(done.id).status == "queued"

    no_database = start_exporter(
        {**api_env, "CONVEYOR_DATABASE_URL": f"postgresql+psycopg://postgres@{nothing}/conveyor"},
        "--final-counts-every",
        "0",
    )
    status, body = no_database.get("/metrics")
    assert status == 200
    sample = parse(body)
    assert value(sample, "conveyor_exporter_up", source="postgresql") == 0
    assert value(sample, "conveyor_exporter_up", source="rabbitmq") == 1
    for absent in (
        "conveyor_jobs",
        "conveyor_queue_oldest_wait_seconds",
        "conveyor_jobs_drift",
        "conveyor_scheduler_leader",
    ):
        assert not family(sample, absent), absent
    assert value(sample, "conveyor_queue_messages_ready", queue=default) is not None
    assert no_database.get("/healthz") == (200, "ok\n")
    assert no_database.get("/nothing")[0] == 404
    time.sleep(0.2)
    assert sum("postgresql unavailable to the exporter" in line for line in no_database.lines) == 1


def test_the_exporter_refuses_to_start_without_the_management_api(service_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "exporter", "--port", "0"],
        env=service_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 2, result.stderr
    assert "CONVEYOR_RABBITMQ_API_URL" in result.stderr
    assert "Traceback" not in result.stderr
