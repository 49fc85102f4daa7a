"""The metric families of a worker replica: names, labels, buckets, the docs page, and the
metrics middleware on the in-memory broker (the replica endpoint: tests/integration/test_metrics.py)."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest

from jobs import metrics
from jobs.errors import JobFailed
from jobs.middleware import Lifecycle
from jobs.middleware.metrics import Metrics
from jobs.settings import Settings
from jobs.store import AttemptStore, Database, WorkerIdentity
from jobs.store.migrate import ensure_database, upgrade
from producers import Client
from tests.helpers import eventually
from workers.runtime import WorkerStack, build_worker_stack, worker_middleware

ROOT = Path(__file__).resolve().parents[2]
IDENTITY = WorkerIdentity(worker_id="unit:1:abc", host="unit", pid=1)

#: SPEC §8: the required families, their types and labels, exactly.
REQUIRED = {
    "conveyor_job_attempts_finished_total": ("counter", ("queue", "kind", "outcome")),
    "conveyor_job_run_seconds": ("histogram", ("queue", "kind")),
    "conveyor_job_queue_wait_seconds": ("histogram", ("queue", "kind")),
    "conveyor_jobs_in_progress": ("gauge", ("queue", "kind")),
    "conveyor_email_deliveries_total": ("counter", ("outcome",)),
}


def test_the_required_families_have_their_specified_names_types_and_labels() -> None:
    families = {f.name: (f.type, f.labels) for f in metrics.FAMILIES}

    assert {name: families.get(name) for name in REQUIRED} == REQUIRED


def test_no_label_carries_an_id_and_each_family_is_named_by_the_conventions() -> None:
    for family in metrics.FAMILIES:
        assert family.name.startswith("conveyor_")
        assert not any("id" in label.split("_") for label in family.labels), family.name
        assert family.name.endswith("_total") == (family.type == "counter"), family.name
        if family.type == "gauge":  # a dead process must leave no series behind
            assert family.multiprocess_mode.startswith("live"), family.name
        if family.type == "histogram":
            assert family.buckets == tuple(sorted(family.buckets)), family.name


def test_the_time_buckets_resolve_milliseconds_up_to_ten_minutes() -> None:
    buckets = metrics.BUCKETS

    assert buckets[0] == 0.001
    assert buckets[-1] == 600
    assert len([b for b in buckets if b <= 0.01]) >= 4  # 1, 2.5, 5 and 10 ms: a 2 ms p50 is resolved
    assert all(later / earlier <= 3 for earlier, later in itertools.pairwise(buckets))


def test_every_family_is_described_on_the_metrics_page() -> None:
    page = (ROOT / "docs" / "operations" / "metrics.md").read_text()
    named = set(re.findall(r"`(conveyor_[a-z_]+)`", page))

    assert {f.name for f in metrics.FAMILIES} <= named


def test_hooks_cost_nothing_and_import_nothing_while_metrics_are_off() -> None:
    program = (
        "import sys; from jobs import metrics; import jobs.middleware.metrics, workers.metrics_server; "
        "metrics.attempt_finished('q', 'noop', 'succeeded', 0.1, 0.1); metrics.tick(True); "
        "assert metrics.registry() is None; assert 'prometheus_client' not in sys.modules, 'imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=False
    )

    assert done.returncode == 0, done.stderr


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[WorkerStack]:
    settings = Settings(
        broker_url="memory://", database_url=f"sqlite:///{tmp_path}/jobs.db", namespace="unit"
    )
    ensure_database(settings.database_url)
    metrics.enable(None)
    stack = build_worker_stack(settings, threads=2)
    upgrade(stack.db)
    worker = dramatiq.Worker(stack.broker, worker_threads=2, worker_timeout=50)
    worker.start()
    yield stack
    worker.stop()
    stack.close()
    metrics.disable()


def test_the_middleware_counts_each_recorded_attempt_by_outcome(stack: WorkerStack) -> None:
    with Client(stack.settings, broker=stack.broker) as client:
        for _ in range(3):
            client.enqueue("noop").wait(timeout=10)
        client.enqueue("noop", fail_attempts=1, min_backoff=0.01, max_backoff=0.02).wait(timeout=30)
        with pytest.raises(JobFailed):
            client.enqueue("noop", permanent=True).wait(timeout=10)
    registry = metrics.registry()
    labels = {"queue": "unit.default", "kind": "noop"}

    def counted() -> dict[str, float | None]:
        metrics.flush()  # what a worker process's tick does every second
        return {
            outcome: registry.get_sample_value(
                "conveyor_job_attempts_finished_total", {**labels, "outcome": outcome}
            )
            for outcome in ("succeeded", "retrying", "failed")
        }

    # The row turns final as the end is written, a moment before the middleware counts it.
    eventually(lambda: counted() == {"succeeded": 4.0, "retrying": 1.0, "failed": 1.0}, timeout=5)
    assert registry.get_sample_value("conveyor_job_run_seconds_count", labels) == 6
    assert registry.get_sample_value("conveyor_job_queue_wait_seconds_count", labels) == 6
    metrics.tick(True)  # what a worker process does every second
    assert registry.get_sample_value("conveyor_jobs_in_progress", labels) == 0
    assert registry.get_sample_value("conveyor_messages_dead_lettered_total", {"queue": "unit.default"}) == 1
    assert registry.get_sample_value("conveyor_worker_threads", {}) == 2
    assert registry.get_sample_value("conveyor_worker_threads_busy", {}) == 0


def test_the_metrics_middleware_sits_right_before_the_recorder_pair(tmp_path: Path) -> None:
    lifecycle = Lifecycle.build(AttemptStore(Database(f"sqlite:///{tmp_path}/x.db")), IDENTITY)

    built = [type(m).__name__ for m in worker_middleware(lifecycle, metrics=Metrics())]

    # Its after_* hooks then run after the recorder's: it sees each attempt's recorded outcome.
    assert built[built.index("Metrics") + 1 : built.index("Metrics") + 3] == ["InFlight", "Recording"]
    assert "Metrics" not in [type(m).__name__ for m in worker_middleware(lifecycle)]


def test_tallied_observations_expose_exactly_what_observe_would() -> None:
    """The tallies written once a second (private ``_sum``/``_buckets`` of a histogram child)
    give the same samples as ``observe`` on each value: bucket edges, +Inf, zero and the sum."""
    import prometheus_client as prom

    values = [0.0, 0.001, 0.0010001, 0.0025, 0.003, 0.7, 600.0, 601.0, 1e9, 0.05, 0.05]
    direct = prom.CollectorRegistry()
    histogram = prom.Histogram("h", "h", ["q"], buckets=metrics.BUCKETS, registry=direct)
    for value in values:
        histogram.labels("a").observe(value)
    metrics.enable(None)
    try:
        for value in values:
            metrics.attempt_finished("a", "noop", "succeeded", value, 0.0)
        metrics.flush()
        metrics.flush()  # nothing new: writes nothing twice
        tallied = metrics.registry()
        for bound in (*metrics.BUCKETS, float("inf")):
            le = prom.utils.floatToGoString(bound)
            expected = direct.get_sample_value("h_bucket", {"q": "a", "le": le})
            got = tallied.get_sample_value(
                "conveyor_job_run_seconds_bucket", {"queue": "a", "kind": "noop", "le": le}
            )
            assert got == expected, le
        labels = {"queue": "a", "kind": "noop"}
        assert tallied.get_sample_value("conveyor_job_run_seconds_sum", labels) == pytest.approx(sum(values))
        assert tallied.get_sample_value("conveyor_job_run_seconds_count", labels) == len(values)
        assert tallied.get_sample_value("conveyor_job_queue_wait_seconds_count", labels) == len(values)
        assert tallied.get_sample_value(
            "conveyor_job_attempts_finished_total", {**labels, "outcome": "succeeded"}
        ) == len(values)
    finally:
        metrics.disable()
