"""`conveyor bench`: a load generator against the configured stack (workers must be running).

Measures what a producer and the running replicas achieve together: the enqueue rate
(confirmed, row written), the processing rate of a backlog, and the enqueue-to-start
latency of single jobs sent into idle workers.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from jobs.errors import BenchError
from producers import Client, Job

#: Single jobs sent one at a time for the latency figures.
LATENCY_SAMPLES = 30


@dataclass(frozen=True)
class BenchResult:
    jobs: int
    sleep: float
    enqueue_per_second: float
    processed_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    failed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_bench(
    client: Client,
    *,
    jobs: int,
    sleep: float,
    timeout: float = 600.0,
    on_progress: Callable[[str, int, int], None] = lambda _phase, _done, _total: None,
) -> BenchResult:
    """Latency first (into idle workers), then a backlog of ``jobs`` noop jobs.

    Raises:
        BenchError: no worker finished the first job within 30 s, or the backlog timed out.
    """
    latencies = _latencies(client, min(LATENCY_SAMPLES, jobs), on_progress)
    started = time.perf_counter()
    backlog: list[Job] = []
    for i in range(jobs):
        backlog.append(client.enqueue("noop", sleep=sleep) if sleep else client.enqueue("noop"))
        if i % 50 == 0:
            on_progress("enqueue", i, jobs)
    enqueue_rate = jobs / (time.perf_counter() - started)
    on_progress("enqueue", jobs, jobs)
    infos = _wait_all(client, backlog, timeout, on_progress)
    first_start = min(i.started_at for i in infos if i.started_at)
    last_end = max(i.finished_at for i in infos if i.finished_at)
    span = max((last_end - first_start).total_seconds(), 1e-6)
    return BenchResult(
        jobs=jobs,
        sleep=sleep,
        enqueue_per_second=round(enqueue_rate, 1),
        processed_per_second=round(jobs / span, 1),
        latency_p50_ms=round(statistics.median(latencies), 2),
        latency_p99_ms=round(_percentile(latencies, 0.99), 2),
        failed=sum(1 for i in infos if i.status != "succeeded"),
    )


def _latencies(client: Client, samples: int, on_progress: Callable[[str, int, int], None]) -> list[float]:
    """Milliseconds from just before ``enqueue`` to the job's start in a worker."""
    values = []
    for n in range(samples):
        before = datetime.now().astimezone()
        job = client.enqueue("noop")
        try:
            job.wait(timeout=30)
        except TimeoutError:
            raise BenchError(
                "no worker finished a noop job within 30 s: is `conveyor worker` running?"
            ) from None
        assert job.info.started_at is not None
        values.append((job.info.started_at - before).total_seconds() * 1000)
        on_progress("latency", n + 1, samples)
    return values


def _wait_all(
    client: Client, backlog: list[Job], timeout: float, on_progress: Callable[[str, int, int], None]
) -> list[Any]:
    deadline = time.monotonic() + timeout
    ids = {job.id for job in backlog}
    while True:
        done = [i for i in _infos(client, ids) if i.finished_at is not None]
        on_progress("process", len(done), len(ids))
        if len(done) == len(ids):
            return done
        if time.monotonic() > deadline:
            raise BenchError(f"{len(ids) - len(done)} of {len(ids)} jobs unfinished after {timeout:g} s")
        time.sleep(0.2)


def _infos(client: Client, ids: set[str]) -> list[Any]:
    return [job.info for job in client.get_many(ids)]


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]
