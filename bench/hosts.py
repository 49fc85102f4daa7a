"""Replicas on separate hosts: the no-op drain at 1, 2 and 3 network-namespace hosts.

Each host is a network namespace with its own address and host name (bench/netns.py), reaching
RabbitMQ, PostgreSQL and Redis through ``socat`` forwarders on the host side; it runs one
``conveyor worker --processes 1 --threads 8 --queues default``. Each measurement enqueues N no-op
jobs first, starts the replicas together, and counts from the moment the last one is ready:
rate = jobs finished after that moment ÷ (last ``finished_at`` − that moment).

To tell where it saturates, the CPU of each party is read from ``/proc`` over the same stretch,
per job: RabbitMQ (the ``beam.smp`` of the ``rabbitmq`` user), PostgreSQL (every ``postgres``
process: other users of the server count too), Redis, the replicas, the forwarders; and the
machine's busy cores (``/proc/stat``), and the WAL PostgreSQL wrote per job to enqueue and to drain.
The "speed ratio" is N hosts ÷ 1 host: 2.0 would be
perfect scaling at two hosts. Needs root; runs only when named::

    python bench/compare.py --only hosts --runs 3 --jobs 5000
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.harness import BenchFailed, conveyor_env, new_client, sql_connect
from bench.netns import NamespaceHost, namespace_hosts, remove_stale, unavailable
from bench.sections import Comparison
from bench.systems.base import process_tree

ROOT = Path(__file__).resolve().parent.parent
#: Jobs per ``enqueue_many`` call.
BATCH = 500
HOST_COUNTS = (1, 2, 3)
THREADS = 8
#: Parties whose CPU is reported, in this order.
PARTIES = ("rabbitmq", "postgres", "redis", "replicas", "forwarders")


class HostsSection:
    name = "hosts"
    title = "Replicas on separate hosts: no-op drain at 1, 2 and 3 network-namespace hosts"
    sides = ("N hosts", "1 host")

    def __init__(self, settings: dict[str, str], rabbit: Any, jobs: int) -> None:
        self.settings = dict(settings)
        self.rabbit = rabbit
        self.jobs = jobs
        self.queue = f"{settings['namespace']}.default"
        self.comparisons = [
            Comparison(
                f"hosts{n}",
                f"no-op drain, {n} hosts × 1 process × {THREADS} threads",
                "jobs/s",
                f"{n} namespace hosts",
                "1 namespace host",
            )
            for n in HOST_COUNTS[1:]
        ]
        self._stack: contextlib.ExitStack | None = None
        self.hosts: list[NamespaceHost] = []

    def config(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "threads": THREADS, "hosts": list(HOST_COUNTS), "cores": os.cpu_count()}

    def setup(self) -> None:
        why = unavailable()
        if why is not None:
            raise BenchFailed(f"hosts section: {why}")
        remove_stale()
        ports = sorted({_port(self.settings[key]) for key in ("broker_url", "database_url", "redis_url")})
        self._stack = contextlib.ExitStack()
        self.hosts = self._stack.enter_context(namespace_hosts(max(HOST_COUNTS), ports))
        self.sql = sql_connect(self.settings["database_url"])

    def close(self) -> None:
        if hasattr(self, "sql"):
            self._reset()
            self.sql.close()
        if self._stack is not None:
            self._stack.close()

    def _reset(self) -> None:
        self.rabbit.purge([f"{self.queue}{suffix}" for suffix in ("", ".DQ", ".XQ")])
        self.sql.execute("DELETE FROM jobs WHERE queue = %s", (self.queue,))

    def measure(self, run: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        # Alternating the order keeps a drifting machine from favouring one count.
        for n in HOST_COUNTS if run % 2 else HOST_COUNTS[::-1]:
            rate, figures = self._drain(n)
            metrics[f"rate_{n}h"] = rate
            metrics.update({f"{key}_{n}h": value for key, value in figures.items()})
        for n in HOST_COUNTS[1:]:
            metrics[f"hosts{n}.conveyor"] = metrics[f"rate_{n}h"]
            metrics[f"hosts{n}.baseline"] = metrics["rate_1h"]
        return metrics

    def _drain(self, count: int) -> tuple[float, dict[str, float]]:
        """The drain rate at ``count`` hosts (jobs/s) and the CPU figures of its steady stretch."""
        self._reset()
        wal_start = self._wal()
        with new_client(self.settings) as client:
            for first in range(0, self.jobs, BATCH):
                client.enqueue_many("noop", [{}] * min(BATCH, self.jobs - first))
        wal_enqueued = self._wal()
        with self._replicas(self.hosts[:count]) as replicas:
            _await_ready(replicas)
            began, cpu_before, machine_before = time.time(), self._cpu(replicas), _machine_ticks()
            last = self._await_drained(replicas)
            cpu_after, machine_after = self._cpu(replicas), _machine_ticks()
        done = self._finished_since(began)
        if done < self.jobs // 4:
            raise BenchFailed(f"hosts: only {done} jobs finished after the replicas were ready")
        busy = (machine_after[0] - machine_before[0]) / max(machine_after[1] - machine_before[1], 1)
        figures = {
            f"cpu_ms_{party}": 1000 * (cpu_after[party] - cpu_before[party]) / done for party in PARTIES
        }
        figures["busy_cores"] = busy * (os.cpu_count() or 1)
        # The whole server's WAL: other databases' writes in the meantime count too.
        figures["wal_kb_enqueue"] = (wal_enqueued - wal_start) / 1024 / self.jobs
        figures["wal_kb_drain"] = (self._wal() - wal_enqueued) / 1024 / self.jobs
        return done / max(last - began, 1e-6), figures

    @contextlib.contextmanager
    def _replicas(self, hosts: list[NamespaceHost]) -> Iterator[list[_Replica]]:
        env = conveyor_env(self.settings)
        argv = [sys.executable, str(ROOT / "cli.py"), "worker", "-p", "1", "-t", str(THREADS)]
        replicas = [_Replica(host, env, [*argv, "--queues", "default"]) for host in hosts]
        try:
            yield replicas
        finally:
            for replica in replicas:
                replica.stop()

    def _await_drained(self, replicas: list[_Replica]) -> float:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            row = self.sql.execute(
                "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status "
                "IN ('failed', 'cancelled')), extract(epoch FROM max(finished_at)) FROM jobs WHERE queue = %s",
                (self.queue,),
            ).fetchone()
            assert row is not None
            if row[1]:
                raise BenchFailed(f"hosts: {row[1]} job(s) failed")
            if row[0] >= self.jobs:
                return float(row[2])
            if any(r.process.poll() is not None for r in replicas):
                raise BenchFailed("hosts: a replica exited")
            time.sleep(0.05)
        raise BenchFailed("hosts: the backlog did not drain within 300 s")

    def _wal(self) -> int:
        """Bytes of WAL the server has written so far."""
        row = self.sql.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()
        assert row is not None
        return int(row[0])

    def _finished_since(self, moment: float) -> int:
        row = self.sql.execute(
            "SELECT count(*) FROM jobs WHERE queue = %s AND finished_at > to_timestamp(%s)",
            (self.queue, moment),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def _cpu(self, replicas: list[_Replica]) -> dict[str, float]:
        """CPU seconds so far of each party."""
        rabbit_uid = _uid("rabbitmq")
        by_party = dict.fromkeys(PARTIES, 0.0)
        for pid, comm, uid in _processes():
            if comm == "beam.smp" and uid == rabbit_uid:
                by_party["rabbitmq"] += _cpu_seconds(pid)
            elif comm.startswith("postgres"):
                by_party["postgres"] += _cpu_seconds(pid)
            elif comm == "redis-server":
                by_party["redis"] += _cpu_seconds(pid)
        by_party["replicas"] = sum(map(_cpu_seconds, process_tree([r.process.pid for r in replicas])))
        forwarders = [f.pid for host in self.hosts for f in host.forwarders]
        by_party["forwarders"] = sum(map(_cpu_seconds, process_tree(forwarders)))
        return by_party


class _Replica:
    """One `conveyor worker` inside a namespace host, its " ready: " lines counted."""

    def __init__(self, host: NamespaceHost, env: dict[str, str], argv: list[str]) -> None:
        self.process = subprocess.Popen(
            host.command(argv),
            env=host.environment(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if " ready: " in line:
                self.ready.set()
            if os.environ.get("BENCH_DEBUG"):
                print(line, end="", file=sys.stderr)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _await_ready(replicas: list[_Replica], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for replica in replicas:
        if not replica.ready.wait(max(0.0, deadline - time.monotonic())):
            raise BenchFailed("hosts: a replica did not become ready (BENCH_DEBUG=1 shows its log)")


def _port(url: str) -> int:
    parts = urlsplit(url)
    defaults = {"amqp": 5672, "redis": 6379}
    return parts.port or defaults.get(parts.scheme, 5432)


def _uid(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def _processes() -> Iterator[tuple[int, str, int]]:
    """``(pid, command name, uid)`` of every process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            uid = entry.stat().st_uid
        except OSError:
            continue
        yield int(entry.name), comm, uid


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int]:
    """``(busy, total)`` clock ticks of all cores since boot (``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)
