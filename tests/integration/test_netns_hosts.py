"""Replicas on hosts of their own: one `conveyor worker` in each of three network namespaces
(own address, own host name, services reached through the host side), draining one backlog."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import pytest

from bench.netns import NamespaceHost, namespace_hosts, remove_stale, unavailable
from producers import Client
from tests.helpers import ROOT, WorkerProcess, eventually, run_cli

pytestmark = pytest.mark.integration

HOSTS = 3
JOBS = 300
#: RabbitMQ, PostgreSQL, Redis: what a replica needs, forwarded to the host's loopback.
SERVICE_PORTS = (5672, 5432, 6379)


@pytest.fixture
def hosts() -> Iterator[list[NamespaceHost]]:
    why = unavailable()
    if why == "network namespaces need root":  # a developer's laptop; CI and make test run as root
        pytest.skip(why)
    assert why is None, f"{why} (make test installs ip and socat: scripts/ensure-system-packages.sh)"
    remove_stale()
    with namespace_hosts(HOSTS, SERVICE_PORTS) as made:
        yield made


def start_in(host: NamespaceHost, env: dict[str, str]) -> WorkerProcess:
    """A `conveyor worker` replica inside ``host``'s namespace, its URLs pointed at the host side
    (not waited for: the caller waits for all replicas at once)."""
    argv = [sys.executable, str(ROOT / "cli.py"), "worker", "--processes", "1", "--threads", "4"]
    process = subprocess.Popen(
        host.command([*argv, "--shutdown-timeout", "30"]),
        env=host.environment(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    return WorkerProcess(process, 1)


def test_replicas_in_three_network_namespaces_show_as_three_hosts_and_share_a_backlog(
    hosts: list[NamespaceHost], service_env: dict[str, str], client: Client
) -> None:
    env = {**service_env, "CONVEYOR_WORKER_TTL": "6"}
    workers = [start_in(host, env) for host in hosts]
    try:
        for worker in workers:
            worker.wait_ready(1, timeout=60)
        listing = eventually(lambda: _listed_hosts(env, HOSTS), timeout=30)
        jobs = client.enqueue_many("noop", [{"sleep": 0.05}] * JOBS)
        for job in jobs:
            job.wait(timeout=120)
        ran_on = Counter(job.history()[0].worker.split(":", 1)[0] for job in jobs)
    finally:
        for worker in workers:
            worker.terminate()

    assert sorted(listing) == [host.hostname for host in hosts]
    assert set(ran_on) == {host.hostname for host in hosts}, ran_on
    assert sum(ran_on.values()) == JOBS
    for host, worker in zip(hosts, workers, strict=True):
        assert worker.process.returncode == 0, "\n".join(worker.lines[-20:])
        assert worker.count(f"worker {host.hostname}:") >= 1, "\n".join(worker.lines[-20:])


def _listed_hosts(env: dict[str, str], expected: int) -> list[str] | None:
    """The host of each replica `conveyor workers` lists, once there are ``expected`` of them."""
    result = run_cli("workers", "--json", env=env)
    assert result.returncode == 0, result.stderr
    hosts = [replica["host"] for replica in json.loads(result.stdout)["replicas"]]
    return hosts if len(hosts) == expected else None
