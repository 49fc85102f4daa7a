"""The cost of the replica's metrics: the no-op drain with ``--metrics-port`` against without.

Each run drains the same backlog twice on the same services, in alternating order: N no-op
jobs enqueued with ``client.enqueue_many`` (500 per call), then ``conveyor worker -p 2 -t 8
--queues default`` runs them; rate = N ÷ (last ``finished_at`` − first ``started_at``). With
metrics, Prometheus is stood in for by a scrape of ``/metrics`` every second during the drain,
and the counters are checked at the end (every job counted once), so the side measured is
really counting. Beside the rate, the CPU the replica (supervisor and worker processes) spends
per job once started: on a shared machine it varies less than a rate does. And since even that
moves by a few per cent from run to run, the hooks' own cost per attempt is measured alone
(``bench/metrics_hooks.py``: the real middleware over a real message, 40,000 attempts, best of 5)
and added to the drain's CPU per job without metrics: the ``hooks`` ratio is the cost the metrics
add to each job, free of the drain's noise.

The "speed ratio" is with metrics ÷ without: 0.97 means the metrics cost 3 %. Runs on its own::

    python bench/compare.py --only metrics --runs 3 --jobs 5000
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.harness import (
    BenchFailed,
    cpu_seconds,
    new_client,
    queue_outcomes,
    running_worker,
    sql_connect,
    wait_succeeded,
)
from bench.sections import Comparison

#: Jobs per ``enqueue_many`` call.
BATCH = 500
#: Seconds between two scrapes during a drain (Prometheus scrapes every 15 s by default).
SCRAPE_EVERY = 1.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _hooks_us() -> float:
    """The metrics hooks' CPU per attempt in µs, measured alone in a fresh process."""
    script = Path(__file__).with_name("metrics_hooks.py")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def _finished(text: str) -> float:
    """The sum of ``conveyor_job_attempts_finished_total`` in a scrape."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("conveyor_job_attempts_finished_total{")
    )


class MetricsSection:
    name = "metrics"
    title = "Metrics: the no-op drain with --metrics-port against without"
    sides = ("with /metrics", "without")

    def __init__(self, settings: dict[str, str], rabbit: Any, jobs: int, threads: int = 8) -> None:
        self.settings = dict(settings)
        self.rabbit = rabbit
        self.jobs = jobs
        self.threads = threads
        self.queue = f"{settings['namespace']}.default"
        self.comparisons = [
            Comparison(
                "drain",
                f"no-op drain, 2 processes × {threads} threads",
                "jobs/s",
                "--metrics-port, scraped every second",
                "no metrics",
            ),
            Comparison(
                "hooks",
                "CPU per job: the drain's without metrics, plus the metrics hooks of one attempt "
                "measured alone (bench/metrics_hooks.py)",
                "ms",
                "with the hooks",
                "no metrics",
                higher_is_better=False,
            ),
            Comparison(
                "cpu",
                "CPU of the replica per job (supervisor and worker processes)",
                "ms",
                "--metrics-port, scraped every second",
                "no metrics",
                higher_is_better=False,
            ),
        ]

    def config(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "threads": self.threads, "scrape_every_s": SCRAPE_EVERY}

    def setup(self) -> None:
        self.sql = sql_connect(self.settings["database_url"])

    def close(self) -> None:
        if hasattr(self, "sql"):
            self._reset()
            self.sql.close()

    def _reset(self) -> None:
        self.rabbit.purge([f"{self.queue}{suffix}" for suffix in ("", ".DQ", ".XQ")])
        self.sql.execute("DELETE FROM jobs WHERE queue = %s", (self.queue,))

    def measure(self, run: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        # Alternating which goes first keeps a drifting machine from favouring one side.
        sides = [("conveyor", True), ("baseline", False)]
        for side, with_metrics in sides if run % 2 else sides[::-1]:
            metrics[f"drain.{side}"], metrics[f"cpu.{side}"] = self._drain(with_metrics)
        hooks_ms = _hooks_us() / 1000
        metrics["hooks.baseline"] = metrics["cpu.baseline"]
        metrics["hooks.conveyor"] = metrics["cpu.baseline"] + hooks_ms
        metrics["hooks_us_per_attempt"] = hooks_ms * 1000
        return metrics

    def _drain(self, with_metrics: bool) -> tuple[float, float]:
        """The drain rate (jobs/s), and the replica's CPU per job (ms: supervisor and workers)."""
        self._reset()
        with new_client(self.settings) as client:
            for first in range(0, self.jobs, BATCH):
                client.enqueue_many("noop", [{}] * min(BATCH, self.jobs - first))
        args = ["--processes", "2", "--threads", str(self.threads), "--queues", "default"]
        port = _free_port()
        if with_metrics:
            args += ["--metrics-port", str(port)]
        stop = threading.Event()
        with running_worker(self.settings, *args) as worker:
            scraper = threading.Thread(target=self._scrape_until, args=(port, stop), daemon=True)
            if with_metrics:
                scraper.start()
            try:
                # Start-up (imports, connections) is behind the first job: the CPU from there on is the jobs'.
                wait_succeeded(lambda: queue_outcomes(self.sql, self.queue), 1, worker, "no-op jobs")
                cpu_before, done_before = cpu_seconds(worker.pid), queue_outcomes(self.sql, self.queue)[0]
                last = wait_succeeded(
                    lambda: queue_outcomes(self.sql, self.queue), self.jobs, worker, "no-op jobs"
                )
                cpu = (cpu_seconds(worker.pid) - cpu_before) / max(self.jobs - done_before, 1)
            finally:
                stop.set()
            if scraper.is_alive() or scraper.ident is not None:
                scraper.join()
            if with_metrics:
                self._check_counted(port)
        row = self.sql.execute(
            "SELECT extract(epoch FROM min(started_at)) FROM jobs WHERE queue = %s", (self.queue,)
        ).fetchone()
        assert row is not None
        return self.jobs / max(last - float(row[0]), 1e-6), cpu * 1000

    def _scrape_until(self, port: int, stop: threading.Event) -> None:
        while not stop.wait(SCRAPE_EVERY):
            with contextlib.suppress(OSError):  # the endpoint is not up yet
                _scrape(port)

    def _check_counted(self, port: int) -> None:
        deadline = time.monotonic() + 10
        while (counted := _finished(_scrape(port))) < self.jobs and time.monotonic() < deadline:
            time.sleep(0.1)
        if counted != self.jobs:
            raise BenchFailed(f"/metrics counted {counted:.0f} finished attempts, not {self.jobs}")
