"""A three-node RabbitMQ cluster loses, by ``kill -9``, the node that the producer and the worker
are connected to (and that leads the quorum queue), then gets it back: no job is lost, none
succeeds twice, and both carry on by themselves. The pause it costs is measured."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.cluster import SERVER, Cluster
from tests.chaos.conftest import Record
from tests.chaos.ledger import Ledger
from tests.helpers import ROOT, WorkerProcess, eventually

pytestmark = pytest.mark.chaos

JOBS = 600
#: Seconds between two enqueues: 600 jobs take ~24 s, across the failover.
PACE = 0.04
#: Seconds the killed node stays down before it is started again.
DOWN_FOR = 8.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three RabbitMQ nodes on ports 5682-5684, stopped (only they) after the module."""
    if not SERVER.exists():
        pytest.skip("rabbitmq-server is not installed")
    started = Cluster(tmp_path_factory.mktemp("rabbitmq-cluster"))
    try:
        started.start_s = started.start()
        yield started
    finally:
        started.stop()


class ProducerProcess:
    """``python -m tests.chaos.steady_producer``, its JSON lines collected as they come."""

    def __init__(self, env: dict[str, str], count: int, pace: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.steady_producer", str(count), str(pace)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(json.loads(line))

    @property
    def enqueued(self) -> list[str]:
        return [line["id"] for line in list(self.lines) if "id" in line]

    @property
    def refused(self) -> list[str]:
        return [line["refused"] for line in list(self.lines) if "refused" in line]

    def stall(self) -> float:
        """Seconds the slowest enqueue blocked."""
        return max((float(line["took"]) for line in self.lines), default=0.0)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._reader.join(timeout=5)
            if self.process.stdout is not None:
                self.process.stdout.close()


def longest_gap(moments: list[datetime], since: datetime) -> float:
    """Seconds of the longest stretch without a completion, from ``since`` to the last moment."""
    points = [since, *(m for m in moments if m > since)]
    return round(max((b - a).total_seconds() for a, b in itertools.pairwise(points)), 2)


@pytest.mark.timeout(240)
def test_a_killed_cluster_node_costs_a_pause_but_no_job(
    cluster: Cluster,
    service_env: dict[str, str],
    namespace: str,
    start_worker: WorkerProcess.Factory,
    ledger: Ledger,
    chaos_report: Record,
) -> None:
    env = {
        **service_env,
        "CONVEYOR_BROKER_URL": cluster.broker_url,
        "CONVEYOR_RABBITMQ_API_URL": cluster.api_url,
        "CONVEYOR_QUEUE_TYPE": "quorum",
    }
    worker = start_worker("--processes", "1", "--threads", "8", env=env)
    producer = ProducerProcess(env, JOBS, PACE)
    eventually(lambda: len(producer.enqueued) >= 100, timeout=60)

    queue = f"{namespace}.default"
    # The management API lists connections from statistics it gathers every few seconds: on a
    # busy machine the producer's and the worker's can be missing from it for a while (a clean
    # run once found the list empty after 100 jobs were enqueued).
    by_node = eventually(lambda: cluster.connections_by_node() or None, timeout=30, interval=0.5)
    victim = by_node.most_common(1)[0][0]
    leader = cluster.queue_leader(queue)
    killed_at = datetime.now(UTC)
    cluster.kill(victim)
    time.sleep(DOWN_FOR)
    restart_s = cluster.start()
    restored_at = datetime.now(UTC)
    new_leader = cluster.queue_leader(queue)

    assert producer.wait(timeout=120) == 0, "the producer failed"
    ids = producer.enqueued
    tally = ledger.wait_drained(ids, timeout=90)
    unconfirmed = sorted(ledger.queue_ids(queue) - set(ids))
    everything = ledger.wait_drained(ids + unconfirmed, timeout=15)
    finished = ledger.finish_times(ids)
    chaos_report(
        **tally.summary(),
        cluster_start_s=cluster.start_s,
        connections_before=dict(by_node),
        killed=victim,
        leader_before=leader,
        leader_after=new_leader,
        node_restart_s=restart_s,
        completion_pause_s=longest_gap(finished, killed_at - timedelta(seconds=1)),
        producer_stall_s=round(producer.stall(), 2),
        not_enqueued=len(producer.refused),
        unconfirmed_ran=len(unconfirmed),
        duplicated_all=len(everything.duplicated),
        drained_after_restore_s=tally.recover_after(restored_at),
        consumer_restarts=worker.count("Restarting consumer"),
    )

    assert victim == "a", "everyone should be on the first URL's node"
    assert leader == "a", "the queue was declared on the first URL's node"
    assert producer.refused == [], "an enqueue gave up across the failover"
    assert len(ids) == JOBS
    assert tally.drained, tally.describe()
    assert tally.lost == [], tally.describe()
    assert tally.duplicated == [], tally.describe()
    assert everything.duplicated == [], everything.describe()
    assert everything.running == [], everything.describe()
    assert worker.process.poll() is None, "\n".join(worker.lines[-30:])
    assert worker.count("Restarting consumer") > 0, "the kill should have cut the consumer off"
    assert Path(f"/proc/{cluster.run('pid', victim).strip()}").exists()
