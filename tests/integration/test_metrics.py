"""The replica's ``/metrics`` and ``/healthz`` (``conveyor worker --metrics-port``), against the rows.

Real `conveyor worker` replicas of 2 processes; what they export is compared with the job and
attempt rows PostgreSQL holds. ``lost`` attempts are left out of the comparison: the process
that ran one died with it, so no replica counts it (the store marks it when the job starts again).
"""

from __future__ import annotations

import os
import signal
import socket
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TypeVar

import dramatiq
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from jobs.broker import build_broker
from jobs.settings import Settings
from jobs.store import Database
from producers import Client
from tests.helpers import WorkerProcess, eventually, run_cli
from tests.proxy import TcpProxy
from tests.smtp import SmtpServer

pytestmark = pytest.mark.integration

T = TypeVar("T")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def scrape(port: int) -> Samples:
    status, body = get(port, "/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def by(samples: Samples, name: str, *labels: str) -> Counter[tuple[str, ...]]:
    """``name``'s samples added up by ``labels``."""
    totals: Counter[tuple[str, ...]] = Counter()
    for (sample, pairs), value in samples.items():
        if sample == name:
            found = dict(pairs)
            totals[tuple(found[label] for label in labels)] += int(value)
    return totals


def attempt_rows(db: Database, namespace: str) -> Counter[tuple[str, ...]]:
    """Finished attempts of this test's jobs by (queue, kind, outcome), ``lost`` left out."""
    query = text(
        "SELECT j.queue, j.kind, a.outcome, count(*) FROM job_attempts a JOIN jobs j ON j.id = a.job_id "
        "WHERE j.queue LIKE :prefix AND a.outcome IS NOT NULL AND a.outcome <> 'lost' "
        "GROUP BY j.queue, j.kind, a.outcome"
    )
    with db.engine.connect() as connection:
        rows = connection.execute(query, {"prefix": f"{namespace}.%"}).all()
    return Counter({(str(q), str(k), str(o)): int(n) for q, k, o, n in rows})


def worker_pids(samples: Samples) -> set[int]:
    """The worker processes the replica exports a live series for (``conveyor_worker_consuming``)."""
    return {int(dict(pairs)["pid"]) for (name, pairs) in samples if name == "conveyor_worker_consuming"}


def assert_counts_match_rows(samples: Samples, rows: Counter[tuple[str, ...]]) -> None:
    finished = by(samples, "conveyor_job_attempts_finished_total", "queue", "kind", "outcome")
    assert +finished == +rows
    per_kind: Counter[tuple[str, ...]] = Counter()
    for (queue, kind, _), count in rows.items():
        per_kind[(queue, kind)] += count
    # Histograms count every attempt, whatever its outcome (SPEC §8).
    assert +by(samples, "conveyor_job_run_seconds_count", "queue", "kind") == +per_kind
    assert +by(samples, "conveyor_job_queue_wait_seconds_count", "queue", "kind") == +per_kind


def poll(fetch: Callable[[], T], accept: Callable[[T], bool], timeout: float = 20.0) -> T:
    """The first value of ``fetch()`` that ``accept`` takes, polled for up to ``timeout`` seconds."""
    found: list[T] = []

    def check() -> bool:
        value = fetch()
        if accept(value):
            found.append(value)
        return bool(found)

    eventually(check, timeout=timeout)
    return found[0]


def _matches(port: int, rows: Counter[tuple[str, ...]]) -> bool:
    try:
        assert_counts_match_rows(scrape(port), rows)
    except AssertionError:
        return False
    return True


def wait_final(client: Client, ids: Iterable[str], timeout: float = 60) -> None:
    pending = list(ids)
    eventually(lambda: all(client.get(job_id).status.is_final for job_id in pending), timeout=timeout)


def started(
    start_worker: WorkerProcess.Factory, port: int, env: dict[str, str] | None = None
) -> WorkerProcess:
    worker = start_worker("--processes", "2", "--threads", "4", "--metrics-port", str(port), env=env)
    eventually(lambda: len(worker_pids(scrape(port))) == 2 or None, timeout=20)
    return worker


def test_the_counters_of_a_two_process_replica_equal_the_attempt_rows(
    client: Client, db: Database, namespace: str, start_worker: WorkerProcess.Factory
) -> None:
    port = free_port()
    started(start_worker, port)
    jobs = [client.enqueue("noop").id for _ in range(20)]
    # Retried after at least 3 s: measured from enqueue, their wait would exceed 2.5 s.
    jobs += [client.enqueue("noop", fail_attempts=2, min_backoff=3, max_backoff=3.5).id for _ in range(4)]
    jobs += [client.enqueue("noop", permanent=True).id for _ in range(3)]
    wait_final(client, jobs)

    rows = attempt_rows(db, namespace)
    queue = f"{namespace}.default"
    assert rows == {
        (queue, "noop", "succeeded"): 24,
        (queue, "noop", "retrying"): 8,
        (queue, "noop", "failed"): 3,
    }
    eventually(lambda: _matches(port, rows), timeout=5)

    # The gauges are written every second: idle, both come back to 0.
    samples = poll(lambda: scrape(port), lambda s: s[("conveyor_worker_threads_busy", frozenset())] == 0)
    assert by(samples, "conveyor_jobs_in_progress", "queue", "kind") == {(queue, "noop"): 0}
    assert by(samples, "conveyor_messages_dead_lettered_total", "queue") == {(queue,): 3}
    assert samples[("conveyor_worker_threads", frozenset())] == 8
    # The retries waited in PostgreSQL for their due time: that wait is not latency.
    within = frozenset({("queue", queue), ("kind", "noop"), ("le", "2.5")})
    assert samples[("conveyor_job_queue_wait_seconds_bucket", within)] == 35
    assert by(samples, "conveyor_store_write_batch_size_count")[()] > 0
    assert sum(by(samples, "conveyor_delayed_publish_lateness_seconds_count", "queue").values()) == 8


def test_a_killed_process_leaves_no_stale_series_and_its_counts_stay_counted_once(
    client: Client, db: Database, namespace: str, start_worker: WorkerProcess.Factory
) -> None:
    port = free_port()
    started(start_worker, port)
    quick = [client.enqueue("noop").id for _ in range(30)]
    wait_final(client, quick)
    eventually(lambda: _matches(port, attempt_rows(db, namespace)), timeout=5)
    before = scrape(port)

    slow = [client.enqueue("noop", sleep=4).id for _ in range(6)]
    running = poll(lambda: scrape(port), lambda s: sum(by(s, "conveyor_jobs_in_progress").values()) == 6)
    victim = min(worker_pids(running))
    os.kill(victim, signal.SIGKILL)

    def replaced() -> Samples | None:
        samples = scrape(port)
        pids = worker_pids(samples)
        return samples if len(pids) == 2 and victim not in pids else None

    eventually(replaced, timeout=30)
    wait_final(client, slow, timeout=90)

    eventually(lambda: _matches(port, attempt_rows(db, namespace)), timeout=10)
    # No series of the dead process's in-progress jobs is left over: the gauge comes back to 0
    # (it is written every second).
    after = poll(lambda: scrape(port), lambda s: sum(by(s, "conveyor_jobs_in_progress").values()) == 0)
    assert victim not in worker_pids(after)
    assert_counts_match_rows(after, attempt_rows(db, namespace))
    for key, value in by(before, "conveyor_job_attempts_finished_total", "queue", "kind", "outcome").items():
        assert by(after, "conveyor_job_attempts_finished_total", "queue", "kind", "outcome")[key] >= value


def test_healthz_answers_200_while_the_replica_consumes_and_503_while_rabbitmq_is_out_of_reach(
    service_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    proxy = TcpProxy(5672)
    proxy.start()
    try:
        url = service_env["CONVEYOR_BROKER_URL"].replace(":5672/", f":{proxy.port}/")
        port = free_port()
        started(start_worker, port, env={"CONVEYOR_BROKER_URL": url, "CONVEYOR_CONSUME_TIMEOUT": "300"})
        # A process that has not reported yet is given time, while the other consumes.
        poll(lambda: get(port, "/healthz"), lambda r: r == (200, "2 of 2 worker processes consuming\n"))

        proxy.cut()
        _, body = poll(lambda: get(port, "/healthz"), lambda r: r[0] == 503, timeout=15)
        assert "not consuming" in body
        assert get(port, "/metrics")[0] == 200  # the endpoint itself stays up

        proxy.start()
        eventually(lambda: get(port, "/healthz")[0] == 200, timeout=60)
    finally:
        proxy.cut()


def test_email_deliveries_and_the_rate_limit_wait_are_counted(
    client: Client, start_worker: WorkerProcess.Factory
) -> None:
    smtp = SmtpServer().start()
    try:
        smtp.handler.behaviour.data_replies = ["451 4.3.0 try again later"]
        port = free_port()
        env = {"CONVEYOR_SMTP_URL": smtp.url, "CONVEYOR_EMAIL_RATE": "100/s"}
        worker = start_worker("--processes", "1", "--threads", "2", "--metrics-port", str(port), env=env)
        retried = client.send_email(
            "ada@example.com", "welcome", {"name": "Ada"}, min_backoff=0.1, max_backoff=0.2
        )
        retried.wait(timeout=30)
        client.send_email("bob@example.com", "welcome", {"name": "Bob"}).wait(timeout=30)

        samples = poll(
            lambda: scrape(port), lambda s: sum(by(s, "conveyor_email_deliveries_total").values()) == 3
        )
        assert by(samples, "conveyor_email_deliveries_total", "outcome") == {("sent",): 2, ("failed",): 1}
        assert samples[("conveyor_email_rate_limit_wait_seconds_count", frozenset())] == 3
        assert len(smtp.received) == 2
        worker.terminate()  # before the server it sends to
    finally:
        smtp.stop()


def test_a_copy_of_a_finished_jobs_message_is_counted_as_a_skipped_duplicate(
    client: Client, settings: Settings, start_worker: WorkerProcess.Factory
) -> None:
    port = free_port()
    start_worker("--processes", "1", "--threads", "2", "--metrics-port", str(port))
    job = client.enqueue("noop")
    job.wait(timeout=20)

    broker = build_broker(settings)  # a second copy of its message: a redelivery, a re-published enqueue
    queue = settings.queue_name("default")
    broker.enqueue(
        dramatiq.Message(
            queue_name=queue, actor_name="noop", args=(), kwargs={}, options={}, message_id=job.id
        )
    )
    broker.close()

    # Finished attempts reach /metrics at the worker process's next tick (each second).
    samples = poll(
        lambda: scrape(port),
        lambda s: (
            bool(by(s, "conveyor_duplicate_deliveries_skipped_total"))
            and bool(by(s, "conveyor_job_attempts_finished_total"))
        ),
    )
    assert by(samples, "conveyor_duplicate_deliveries_skipped_total", "queue", "kind") == {(queue, "noop"): 1}
    assert by(samples, "conveyor_job_attempts_finished_total", "outcome") == {("succeeded",): 1}


def test_a_metrics_port_in_use_stops_the_worker_with_a_clear_error(service_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli("worker", "--processes", "1", "--metrics-port", str(port), env=service_env)

    assert result.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert " ready: " not in result.stderr  # no worker process was started
