"""`conveyor scheduler` against the real PostgreSQL and RabbitMQ: each tick enqueued exactly once,
by whichever replica leads, across failovers, downtime and outages."""

from __future__ import annotations

import itertools
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from jobs.schedule import runner
from jobs.schedule.leader import current_leader
from jobs.schedule.runner import OUTAGE_RETRY, Scheduler
from jobs.schedule.spec import Schedule, key_prefix, load_schedule
from jobs.settings import Settings
from jobs.store import Database, JobStore
from jobs.store.models import JobRow
from jobs.store.schedule import TickStore
from producers import Client
from tests.helpers import ROOT, eventually, message_count, observe, run_cli

pytestmark = [pytest.mark.integration]

EVERY_SECOND = '[[job]]\nname = "tick"\nevery = "1s"\nkind = "noop"\n'
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def write_schedule(tmp_path: Path, body: str, settings: Settings) -> Schedule:
    path = tmp_path / "schedule.toml"
    path.write_text(body, encoding="utf-8")
    return load_schedule(path, settings)


def enqueued_ticks(db: Database, settings: Settings, name: str = "tick") -> list[datetime]:
    """The ticks of an entry that have a job, from the jobs' idempotency keys, in order."""
    prefix = key_prefix(settings.namespace, name)
    with db.session() as session:
        keys = session.scalars(
            select(JobRow.idempotency_key).where(JobRow.idempotency_key.like(f"{prefix}%"))
        )
        return sorted(datetime.fromisoformat(str(key).removeprefix(prefix)) for key in keys)


def assert_every_tick_once(client: Client, ticks: list[datetime], at_least: int) -> None:
    assert len(ticks) >= at_least, ticks
    gaps = [(a, b) for a, b in itertools.pairwise(ticks) if b - a != timedelta(seconds=1)]
    assert gaps == [], f"ticks skipped or repeated: {gaps}"
    # One message per tick: a tick enqueued again by another replica sent nothing.
    assert message_count(f"{client.settings.namespace}.default") == len(ticks)


class Replica:
    """A scheduler replica running in a thread of the test, with a client of its own."""

    def __init__(self, schedule: Schedule, settings: Settings) -> None:
        self.db = Database(settings.database_url)
        self.client = Client(settings, db=self.db)
        self.scheduler = Scheduler(schedule, self.client, self.db)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.scheduler.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        self.client.close()
        self.db.dispose()


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for replica in started:
        if replica.thread.is_alive():
            replica.halt()


def test_two_replicas_enqueue_each_per_second_tick_exactly_once(
    tmp_path: Path,
    settings: Settings,
    client: Client,
    db: Database,
    replicas: list[Replica],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="conveyor.scheduler")
    schedule = write_schedule(tmp_path, EVERY_SECOND, settings)
    replicas += [Replica(schedule, settings), Replica(schedule, settings)]

    time.sleep(10)
    for replica in replicas:
        replica.halt()

    ticks = enqueued_ticks(db, settings)
    assert_every_tick_once(client, ticks, at_least=8)
    assert datetime.now(UTC) - ticks[-1] < timedelta(seconds=3)
    assert sum("leader: replica" in m for m in caplog.messages) == 1
    assert sum("follower:" in m for m in caplog.messages) == 1


def test_when_the_leader_stops_the_other_replica_takes_over_without_a_gap(
    tmp_path: Path, settings: Settings, client: Client, db: Database, replicas: list[Replica]
) -> None:
    schedule = write_schedule(tmp_path, EVERY_SECOND, settings)
    first = Replica(schedule, settings)
    replicas.append(first)
    eventually(lambda: first.scheduler.leading)
    second = Replica(schedule, settings)
    replicas.append(second)
    time.sleep(3)
    assert not second.scheduler.leading

    first.halt()
    eventually(lambda: second.scheduler.leading, timeout=5)
    stopped_at = datetime.now(UTC)
    time.sleep(3)
    second.halt()

    ticks = enqueued_ticks(db, settings)
    assert_every_tick_once(client, ticks, at_least=6)
    assert ticks[0] < stopped_at < ticks[-1]


def test_a_leader_whose_connection_is_killed_stops_leading_and_no_tick_is_lost(
    tmp_path: Path, settings: Settings, client: Client, db: Database, replicas: list[Replica]
) -> None:
    schedule = write_schedule(tmp_path, EVERY_SECOND, settings)
    replicas += [Replica(schedule, settings), Replica(schedule, settings)]
    leader = eventually(lambda: next((r for r in replicas if r.scheduler.leading), None))
    assert current_leader(db, settings.namespace) == leader.scheduler.identity
    # Ticks before the kill: waited for, not slept for (a loaded machine may enqueue late).
    eventually(lambda: len(enqueued_ticks(db, settings)) >= 3, timeout=20)

    with db.session() as session:
        killed = session.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name"),
            {"name": f"conveyor-scheduler {leader.scheduler.identity}"},
        ).scalar()
    assert killed
    eventually(lambda: current_leader(db, settings.namespace) is not None, timeout=5)
    killed_at = datetime.now(UTC)
    # Ticks on both sides of the kill (a loaded machine may lag a second behind).
    eventually(lambda: len([t for t in enqueued_ticks(db, settings) if t > killed_at]) >= 3, timeout=20)
    for replica in replicas:
        replica.halt()

    assert_every_tick_once(client, enqueued_ticks(db, settings), at_least=6)


def test_a_new_leader_catches_up_the_ticks_missed_while_none_ran_by_each_entrys_rule(
    tmp_path: Path, settings: Settings, client: Client, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "MAX_CATCH_UP", 10)
    body = "".join(
        f'[[job]]\nname = "{name}"\nevery = "{every}"\nkind = "noop"\ncatch_up = "{rule}"\n'
        for name, every, rule in [("all", "1s", "all"), ("latest", "1s", "latest"), ("none", "10s", "none")]
    )
    schedule = write_schedule(tmp_path, body, settings)
    before = Scheduler(schedule, client, db)
    before.step(T0 + timedelta(seconds=0.5))  # first sight: starts after T0, enqueues nothing
    before.close()
    assert [enqueued_ticks(db, settings, name) for name in schedule.names()] == [[], [], []]

    after = Scheduler(schedule, client, db)  # five minutes later, another replica
    after.step(T0 + timedelta(seconds=300.5))
    after.close()

    def seconds(name: str) -> list[int]:
        return [int((tick - T0).total_seconds()) for tick in enqueued_ticks(db, settings, name)]

    assert seconds("all") == list(range(291, 301))  # the 10 most recent
    assert seconds("latest") == [300]
    assert seconds("none") == [250, 260, 270, 280, 290, 300]  # at most 60 s late
    assert set(TickStore(db, settings.namespace).last_ticks().values()) == {T0 + timedelta(seconds=300)}


def test_a_tick_enqueued_before_a_crash_is_not_enqueued_again(
    tmp_path: Path, settings: Settings, client: Client, db: Database
) -> None:
    schedule = write_schedule(tmp_path, EVERY_SECOND, settings)
    (entry,) = schedule.entries
    TickStore(db, settings.namespace).start("tick", T0)
    # The previous leader enqueued T0+1 s, then died before it could record the tick.
    earlier = client.enqueue(
        "noop", idempotency_key=entry.idempotency_key(settings.namespace, T0 + timedelta(seconds=1))
    )

    scheduler = Scheduler(schedule, client, db)
    scheduler.step(T0 + timedelta(seconds=2.5))
    scheduler.close()

    assert enqueued_ticks(db, settings) == [T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
    assert (
        JobStore(db)
        .find_by_idempotency_key(entry.idempotency_key(settings.namespace, T0 + timedelta(seconds=1)))
        .id
        == earlier.id
    )
    assert message_count(f"{settings.namespace}.default") == 2


def test_an_enqueue_that_meets_an_outage_is_retried_and_its_tick_not_skipped(
    tmp_path: Path, settings: Settings, client: Client, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    schedule = write_schedule(tmp_path, EVERY_SECOND, settings)
    # Nothing listens on port 1: every publish fails as during a RabbitMQ outage (and the client
    # gives up after 1 s rather than its default 30 s of retries).
    unreachable = "amqp://guest:guest@127.0.0.1:1/%2F"
    cut_off = Client(settings.with_overrides(broker_url=unreachable, enqueue_timeout=1.0))
    scheduler = Scheduler(schedule, cut_off, db)
    scheduler.step(T0 + timedelta(seconds=0.5))
    assert scheduler.step(T0 + timedelta(seconds=2.5)) == OUTAGE_RETRY
    assert scheduler.step(T0 + timedelta(seconds=3.5)) == OUTAGE_RETRY
    assert "RabbitMQ is unreachable" in caplog.text
    assert enqueued_ticks(db, settings) == []
    assert TickStore(db, settings.namespace).last_ticks() == {"tick": T0}

    scheduler.producer = client  # RabbitMQ is back
    scheduler.step(T0 + timedelta(seconds=3.5))
    scheduler.close()
    cut_off.close()

    assert enqueued_ticks(db, settings) == [T0 + timedelta(seconds=s) for s in (1, 2, 3)]


def test_schedule_list_shows_each_entry_with_next_runs_last_tick_and_leader(
    tmp_path: Path,
    settings: Settings,
    client: Client,
    db: Database,
    service_env: dict[str, str],
    replicas: list[Replica],
) -> None:
    body = (
        EVERY_SECOND
        + '[[job]]\nname = "daily"\ncron = "0 6 * * *"\ntimezone = "Europe/Paris"\nkind = "noop"\n'
    )
    schedule = write_schedule(tmp_path, body, settings)
    replica = Replica(schedule, settings)
    replicas.append(replica)
    eventually(lambda: enqueued_ticks(db, settings))

    listed = run_cli(
        "schedule", "list", "--schedule", schedule.source, "--next", "3", "--json", env=service_env
    )
    table = run_cli("schedule", "list", "--schedule", schedule.source, env=service_env)

    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    assert document["namespace"] == settings.namespace
    assert document["leader"] == replica.scheduler.identity
    tick, daily = document["entries"]
    assert set(tick) == {
        "name", "kind", "schedule", "cron", "every", "timezone", "catch_up", "payload",
        "next_runs", "last_tick", "last_job_id", "last_job_status",
    }  # fmt: skip
    assert (tick["every"], tick["cron"], tick["kind"], tick["catch_up"]) == ("1s", None, "noop", "all")
    assert len(tick["next_runs"]) == 3
    assert tick["last_tick"] is not None
    assert tick["last_job_status"] == "queued"
    assert (
        JobStore(db).find_by_idempotency_key(f"schedule:{settings.namespace}:tick:{tick['last_tick']}").id
        == tick["last_job_id"]
    )
    assert (daily["cron"], daily["timezone"], daily["last_job_id"]) == ("0 6 * * *", "Europe/Paris", None)
    assert daily["next_runs"][0].endswith(("T05:00:00Z", "T04:00:00Z"))
    assert table.returncode == 0, table.stderr
    assert "daily" in table.stdout
    assert f"leader {replica.scheduler.identity}" in table.stdout


def test_the_scheduler_command_runs_as_a_replica_and_stops_promptly_on_sigterm(
    tmp_path: Path, settings: Settings, client: Client, db: Database, service_env: dict[str, str]
) -> None:
    write_schedule(tmp_path, EVERY_SECOND, settings)
    argv = [sys.executable, str(ROOT / "cli.py"), "scheduler", "--schedule", str(tmp_path / "schedule.toml")]
    processes = [
        subprocess.Popen(
            argv, env=service_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
        )
        for _ in range(2)
    ]
    try:
        eventually(lambda: len(enqueued_ticks(db, settings)) >= 4, timeout=20)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        codes = [process.wait(timeout=10) for process in processes]
        waited = time.monotonic() - started
    outputs = [process.communicate()[0] for process in processes]
    for output in outputs:
        observe(output, "output of `conveyor scheduler`")

    assert codes == [0, 0], outputs
    assert waited < 3
    assert sum("leader: replica" in output for output in outputs) == 1, outputs
    assert sum("follower:" in output for output in outputs) == 1, outputs
    assert any("entry tick, tick " in output and ": enqueued job " in output for output in outputs)
    assert_every_tick_once(client, enqueued_ticks(db, settings), at_least=4)
