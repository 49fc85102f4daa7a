"""A real Prometheus runs the shipped alert rules and answers every query of the shipped dashboard.

The server is Debian's `prometheus` (the session fixture in tests/prometheus.py). It scrapes
a live stack of this test's namespace: a `conveyor worker --processes 2 --metrics-port P` and
a `conveyor exporter --port Q`, after jobs of every fate ran through them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

import pytest
import yaml

from jobs.status import JobStatus
from jobs.store import JobStore
from producers import Client
from tests.helpers import ROOT, WorkerProcess, eventually
from tests.prometheus import ALERTS, ALL, Prometheus, dashboard_queries
from tests.smtp import SmtpServer, free_port

pytestmark = pytest.mark.integration

RABBITMQ_API_URL = "http://guest:guest@127.0.0.1:15672"
#: Worker slots: --processes 2 × --threads 2.
SLOTS = 4
#: Long enough to be running, and waiting, while Prometheus scrapes.
LONG_JOB = 8


def alert_names() -> set[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"]}


def evaluated_rules(prometheus: Prometheus) -> list[dict[str, Any]]:
    """The loaded rules once each has been evaluated at least once."""

    def all_evaluated() -> list[dict[str, Any]] | None:
        rules = prometheus.rules()
        return rules if rules and all(rule["health"] != "unknown" for rule in rules) else None

    return eventually(all_evaluated, timeout=30, interval=0.5)


def failed_queries(prometheus: Prometheus, variables: dict[str, str], *, need_data: bool) -> list[str]:
    """Every dashboard query that Prometheus refuses, or (``need_data``) answers with nothing."""
    failures = []
    for query in dashboard_queries(variables):
        answer = prometheus.query(query.expr)
        if answer["status"] != "success":
            failures.append(f"{query.where}: {answer.get('error')} in {query.expr}")
        elif need_data and not answer["data"]["result"]:
            failures.append(f"{query.where}: no data for {query.expr}")
    return failures


def test_prometheus_loads_every_shipped_rule_and_parses_every_dashboard_query(
    prometheus: Prometheus,
) -> None:
    rules = evaluated_rules(prometheus)

    assert {rule["name"] for rule in rules} == alert_names()
    assert [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    # A query that does not parse is refused even when no series exists.
    assert failed_queries(prometheus, ALL, need_data=False) == []
    assert len(dashboard_queries()) >= 30


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def exporter(service_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """A `conveyor exporter` for this test's namespace; its ``host:port``."""
    port = free_port()
    with (tmp_path / "exporter.log").open("wb") as log:  # the log scan reads *.log
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "exporter", "--port", str(port)],
            # Unacknowledged counts come from the management API.
            env={**service_env, "CONVEYOR_RABBITMQ_API_URL": RABBITMQ_API_URL},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            eventually(lambda: _answers(f"http://127.0.0.1:{port}/metrics", process), timeout=30)
            yield f"127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=20)


def _answers(url: str, process: subprocess.Popen[bytes]) -> bool | None:
    assert process.poll() is None, f"the exporter exited with {process.returncode}"
    try:
        with urlopen(url, timeout=2) as response:
            return response.status == 200 or None
    except (URLError, ConnectionError):
        return None


def run_jobs_of_every_fate(client: Client, job_store: JobStore) -> None:
    """Succeeded, retried then succeeded, failed for good, an email, a delayed one, and
    long ones that keep every slot busy with more waiting behind them."""
    done = [client.enqueue("noop") for _ in range(5)]
    done += [client.enqueue("noop", fail_attempts=1, min_backoff=0.1, max_backoff=0.2)]
    done += [client.enqueue("noop", permanent=True) for _ in range(2)]
    done += [client.send_email("ada@example.com", "welcome", {"name": "Ada"})]
    client.enqueue("noop", delay=3600)
    final = {JobStatus.SUCCEEDED, JobStatus.FAILED}
    eventually(lambda: all(job_store.get(job.id).status in final for job in done) or None, timeout=60)
    for _ in range(SLOTS + 2):
        client.enqueue("noop", sleep=LONG_JOB)


def test_a_real_prometheus_answers_every_dashboard_query_from_a_live_stack(
    prometheus: Prometheus,
    smtp: SmtpServer,  # before the worker, so that it stops after the worker let go of it
    start_worker: WorkerProcess.Factory,
    exporter: str,
    client: Client,
    job_store: JobStore,
    namespace: str,
) -> None:
    metrics_port = free_port()
    # Targets first: Prometheus applies new ones every few seconds, meanwhile the worker starts.
    prometheus.scrape("conveyor-worker", [f"127.0.0.1:{metrics_port}"])
    prometheus.scrape("conveyor-exporter", [exporter])
    try:
        start_worker(
            "--processes", "2", "--threads", "2", "--metrics-port", str(metrics_port),
            env={"CONVEYOR_SMTP_URL": smtp.url},
        )  # fmt: skip
        prometheus.wait_for_scrapes("conveyor-worker", 1)
        prometheus.wait_for_scrapes("conveyor-exporter", 1)
        run_jobs_of_every_fate(client, job_store)
        time.sleep(5)  # a few scrapes of the long jobs running and waiting

        everything = failed_queries(prometheus, ALL, need_data=True)
        one_queue = failed_queries(
            prometheus, {"queue": f"{namespace}.default", "kind": "noop"}, need_data=True
        )
        rules = evaluated_rules(prometheus)
    finally:
        prometheus.scrape("conveyor-worker", [])
        prometheus.scrape("conveyor-exporter", [])

    assert everything == []
    assert one_queue == []
    assert [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
