"""`conveyor workers`: the heartbeat registry in Redis, and its PostgreSQL fallback."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import signal
import socket
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import pytest
import redis

from jobs.admin.workers import ProcessBeat, group_replicas, parse_beat, read_beats
from jobs.errors import SettingsError
from jobs.kinds import KINDS
from jobs.middleware.heartbeat import Heartbeat, Replica, heartbeat_interval, registry_prefix
from jobs.redis_lite import LiteRedis, registry_client
from jobs.settings import Settings
from producers import Client
from tests.helpers import WorkerProcess, eventually, run_cli, secret

if TYPE_CHECKING:
    from jobs.redis_lite import RegistryClient

pytestmark = pytest.mark.integration

TTL = "3"
_READY = re.compile(r"worker (?P<host>[^\s:]+):(?P<pid>\d+):\w+ ready: ")


@pytest.fixture
def env(service_env: dict[str, str]) -> dict[str, str]:
    return {**service_env, "CONVEYOR_WORKER_TTL": TTL}


def listed(env: dict[str, str]) -> dict[str, Any]:
    result = run_cli("workers", "--json", env=env)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def listed_once(env: dict[str, str], supervisor_pids: set[int]) -> dict[str, Any] | None:
    """The listing, once it holds exactly the replicas of ``supervisor_pids``."""
    data = listed(env)
    return data if {r["pid"] for r in data["replicas"]} == supervisor_pids else None


def child_pids(worker: WorkerProcess) -> list[int]:
    """The worker processes' pids, from their "worker host:pid:token ready" log lines."""
    return [int(m["pid"]) for line in list(worker.lines) if (m := _READY.search(line))]


def start_small(start_worker: WorkerProcess.Factory, ttl: str = TTL) -> WorkerProcess:
    return start_worker("--processes", "1", "--threads", "2", env={"CONVEYOR_WORKER_TTL": ttl})


def test_workers_lists_each_live_replica_then_drops_a_killed_one(
    env: dict[str, str], settings: Settings, client: Client, start_worker: WorkerProcess.Factory
) -> None:
    first, second = start_small(start_worker), start_small(start_worker)
    supervisors = {first.process.pid, second.process.pid}

    data = eventually(lambda: listed_once(env, supervisors), timeout=20)

    assert data["source"] == "redis"
    assert data["note"] is None
    host = socket.gethostname()
    every_queue = sorted({settings.queue_name(kind.queue) for kind in KINDS.values()})
    for worker in (first, second):
        replica = next(r for r in data["replicas"] if r["pid"] == worker.process.pid)
        assert replica["id"].startswith(f"{host}:{worker.process.pid}:")
        assert replica["host"] == host
        assert replica["pids"] == child_pids(worker)
        assert (replica["processes"], replica["threads"]) == (1, 2)
        assert replica["queues"] == every_queue
        assert replica["version"] == importlib.metadata.version("conveyor")
        assert (replica["busy"], replica["processed"], replica["failed"]) == (0, 0, 0)
        assert replica["state"] == "running"

    slow = client.enqueue("noop", sleep=3)
    eventually(lambda: sum(r["busy"] for r in listed(env)["replicas"]) == 1, timeout=10)
    slow.wait(timeout=20)
    for _ in range(3):
        client.enqueue("noop").wait(timeout=20)
    retried = client.enqueue("noop", fail_attempts=1, min_backoff=0.01, max_backoff=0.02)
    retried.wait(timeout=20)

    def totals() -> tuple[int, int, int]:
        replicas = listed(env)["replicas"]
        return (
            sum(r["processed"] for r in replicas),
            sum(r["failed"] for r in replicas),
            sum(r["busy"] for r in replicas),
        )

    eventually(lambda: totals() == (5, 1, 0), timeout=10)

    os.kill(first.process.pid, signal.SIGKILL)  # the supervisor first, or it replaces its child
    for pid in child_pids(first):
        os.kill(pid, signal.SIGKILL)

    remaining = eventually(lambda: listed_once(env, {second.process.pid}), timeout=15)
    assert [r["pids"] for r in remaining["replicas"]] == [child_pids(second)]


def test_a_replica_stopped_cleanly_leaves_the_list_at_once(
    service_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    # A TTL far longer than the wait below: only the delete at shutdown can empty the list.
    env = {**service_env, "CONVEYOR_WORKER_TTL": "60"}
    worker = start_small(start_worker, ttl="60")
    eventually(lambda: listed_once(env, {worker.process.pid}), timeout=20)

    worker.terminate()

    assert worker.process.returncode == 0
    eventually(lambda: listed_once(env, set()), timeout=10)


def test_without_redis_workers_falls_back_to_recent_attempts_in_postgresql(
    env: dict[str, str], client: Client, start_worker: WorkerProcess.Factory
) -> None:
    worker = start_small(start_worker)
    job = client.enqueue("noop")
    job.wait(timeout=20)
    ran_on = job.history()[0].worker.rsplit(":", 1)[0]
    assert ran_on == f"{socket.gethostname()}:{child_pids(worker)[0]}"
    no_redis = {**env, "CONVEYOR_REDIS_URL": f"redis://:{secret('redis')}@127.0.0.1:1/0"}

    result = run_cli("workers", "--json", env=no_redis)

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["source"] == "postgresql"
    assert data["note"].startswith("Redis unreachable at redis://:***@127.0.0.1:1/0: ")
    seen = next(r for r in data["replicas"] if r["id"] == ran_on)
    assert seen["attempts"] >= 1
    assert datetime.now(UTC) - datetime.fromisoformat(seen["last_seen"]) < timedelta(minutes=1)

    table = run_cli("workers", env=no_redis)
    assert table.returncode == 0, table.stderr
    assert "Redis unreachable" in table.stderr
    assert "from PostgreSQL" in table.stdout
    assert ran_on in table.stdout
    assert "hunter2" not in table.stdout + table.stderr + result.stdout


def test_the_table_names_its_source_and_each_replica(
    env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    worker = start_small(start_worker)
    data = eventually(lambda: listed_once(env, {worker.process.pid}), timeout=20)

    table = run_cli("workers", env=env)

    assert table.returncode == 0, table.stderr
    assert "1 live replica(s) — from Redis heartbeats" in table.stdout
    assert data["replicas"][0]["id"] in table.stdout
    assert "1×2" in table.stdout
    assert re.search(r"\d+ s ago", table.stdout)


# ---------------------------------------------------------------- no worker needed


def _beat(replica: str, pid: int, **changes: Any) -> ProcessBeat:
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    values: dict[str, Any] = {
        "replica_id": replica,
        "host": replica.split(":")[0],
        "pid": pid,
        "supervisor_pid": int(replica.split(":")[1]),
        "version": "1.0",
        "queues": ("ns.default",),
        "processes": 2,
        "threads": 4,
        "busy": 1,
        "processed": 10,
        "failed": 1,
        "started": start,
        "heartbeat": start + timedelta(seconds=30),
        "state": "running",
    }
    values.update(changes)
    return ProcessBeat(**values)


def test_processes_are_grouped_by_replica_with_their_counters_summed() -> None:
    early = datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    late = datetime(2026, 1, 1, 13, 0, tzinfo=UTC)
    beats = [
        _beat("b:20:aa", 22, queues=("ns.email",)),
        _beat("a:10:ff", 11),
        _beat("b:20:aa", 21, started=early, heartbeat=late, processed=5, state="stopping"),
    ]

    replicas = group_replicas(beats)

    assert [r.id for r in replicas] == ["a:10:ff", "b:20:aa"]
    b = replicas[1]
    assert (b.host, b.pid, b.pids) == ("b", 20, (21, 22))
    assert (b.busy, b.processed, b.failed) == (2, 15, 2)
    assert (b.started, b.last_heartbeat) == (early, late)
    assert b.queues == ("ns.default", "ns.email")
    assert (b.processes, b.threads, b.state) == (2, 4, "stopping")
    assert replicas[0].state == "running"


def test_a_registry_hash_is_parsed_from_bytes_and_junk_is_skipped() -> None:
    raw = {k.encode(): str(v).encode() for k, v in _hash_of(_beat("h:1:ab", 2)).items()}

    assert parse_beat(raw) == _beat("h:1:ab", 2)
    assert parse_beat({}) is None
    assert parse_beat({**raw, b"pid": b"not a number"}) is None


def _hash_of(beat: ProcessBeat) -> dict[str, Any]:
    fields = dict(vars(beat))
    fields.update(
        queues=",".join(beat.queues), started=beat.started.isoformat(), heartbeat=beat.heartbeat.isoformat()
    )
    return fields


#: The registry's two clients: a worker's (jobs/redis_lite.py), and redis-py's, which the CLI and
#: a worker whose Redis URL has options only redis-py reads use.
CLIENTS = ("lite", "redis-py")


def _client(kind: str, url: str) -> RegistryClient:
    client = (
        registry_client(url, timeout=1) if kind == "lite" else redis.Redis.from_url(url, socket_timeout=1)
    )
    assert isinstance(client, LiteRedis) == (kind == "lite")
    return client


@pytest.mark.parametrize("kind", CLIENTS)
def test_heartbeat_counts_jobs_and_fails_open_when_redis_is_down(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = _client(kind, "redis://127.0.0.1:1/0")
    heartbeat = Heartbeat(client, namespace="unit", replica=Replica.create(processes=1), threads=2, ttl=3)
    none = cast(Any, None)
    try:
        for _ in range(4):
            heartbeat.before_process_message(none, none)
        heartbeat.after_process_message(none, none, result=None)
        heartbeat.after_process_message(none, none, exception=ValueError("boom"))
        heartbeat.after_skip_message(none, none)
        with caplog.at_level(logging.WARNING, logger="conveyor.heartbeat"):
            assert heartbeat.beat() is False
            assert heartbeat.beat() is False
    finally:
        client.close()

    fields = heartbeat.fields()
    assert (fields["busy"], fields["processed"], fields["failed"]) == (1, 1, 1)
    assert len([r for r in caplog.records if "cannot reach Redis" in r.getMessage()]) == 1


@pytest.mark.parametrize("kind", CLIENTS)
def test_heartbeat_writes_its_key_with_a_ttl(kind: str, namespace: str) -> None:
    client = _client(kind, Settings().redis_url)
    heartbeat = Heartbeat(client, namespace=namespace, replica=Replica.create(processes=1), threads=2, ttl=9)
    check = redis.Redis.from_url(Settings().redis_url)
    try:
        assert heartbeat.beat() is True
        assert 0 < int(check.ttl(heartbeat.key)) <= 9
        assert check.hget(heartbeat.key, "pid") == str(os.getpid()).encode()
        assert parse_beat(check.hgetall(heartbeat.key)) is not None
    finally:
        check.delete(heartbeat.key)
        check.close()
        client.close()


@pytest.mark.parametrize("kind", CLIENTS)
def test_reading_the_registry_skips_stray_keys_under_its_prefix(kind: str, namespace: str) -> None:
    client = _client(kind, Settings().redis_url)
    heartbeat = Heartbeat(client, namespace=namespace, replica=Replica.create(processes=1), threads=2, ttl=9)
    stray = f"{registry_prefix(namespace)}junk"
    check = redis.Redis.from_url(Settings().redis_url)
    try:
        check.set(stray, "not a hash", ex=9)
        check.hset(f"{stray}2", mapping={"replica_id": "x"})
        assert heartbeat.beat() is True

        beats = read_beats(client, namespace)
    finally:
        check.delete(heartbeat.key, stray, f"{stray}2")
        check.close()
        client.close()

    assert [(b.replica_id, b.pid) for b in beats] == [(heartbeat.replica.replica_id, os.getpid())]


def test_worker_ttl_setting_sets_the_interval_and_is_validated() -> None:
    assert Settings.from_env({}).worker_ttl == 30
    assert Settings.from_env({"CONVEYOR_WORKER_TTL": "3"}).worker_ttl == 3
    assert [heartbeat_interval(t) for t in (3, 5, 30)] == [1, 1, 10]
    with pytest.raises(SettingsError, match="at least 3"):
        Settings.from_env({"CONVEYOR_WORKER_TTL": "2"})
    with pytest.raises(SettingsError, match="not an integer"):
        Settings.from_env({"CONVEYOR_WORKER_TTL": "soon"})
