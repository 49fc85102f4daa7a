"""Two `conveyor scheduler` replicas on one per-second schedule for about a minute; the leader is
killed with SIGKILL half-way and a replacement started: every tick from the first to the last is
enqueued exactly once — no gap, no duplicate — and another replica leads within seconds."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from jobs.schedule.leader import current_leader
from jobs.schedule.spec import key_prefix
from jobs.settings import Settings
from jobs.store import Database
from jobs.store.models import JobRow
from producers import Client
from tests.chaos.conftest import Record
from tests.helpers import ROOT, eventually, message_count, run_cli

pytestmark = pytest.mark.chaos

EVERY_SECOND = '[[job]]\nname = "tick"\nevery = "1s"\nkind = "noop"\n'
#: Seconds the schedule runs, and when (from the start) its leader is killed.
RUN_FOR = 60.0
KILL_AT = 30.0
#: Seconds within which another replica must lead once the leader is dead.
FAILOVER_BOUND = 5.0


class SchedulerProcess:
    """A `conveyor scheduler` subprocess whose output lines are collected as they come."""

    def __init__(self, env: dict[str, str], schedule: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "scheduler", "--schedule", str(schedule)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def count(self, fragment: str) -> int:
        return sum(fragment in line for line in list(self.lines))

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout`` seconds; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def schedulers() -> Iterator[list[SchedulerProcess]]:
    started: list[SchedulerProcess] = []
    yield started
    for process in started:
        process.stop()


def tick_jobs(db: Database, settings: Settings, name: str = "tick") -> list[tuple[datetime, datetime]]:
    """(tick, job created at) for every job row of an entry, by idempotency key, in tick order."""
    prefix = key_prefix(settings.namespace, name)
    with db.session() as session:
        rows = session.execute(
            select(JobRow.idempotency_key, JobRow.created_at).where(JobRow.idempotency_key.like(f"{prefix}%"))
        ).all()
    return sorted(
        (datetime.fromisoformat(str(key).removeprefix(prefix)), _utc(created)) for key, created in rows
    )


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _pid_of(identity: str) -> int:
    """The pid in a replica identity ``host:pid:random``."""
    return int(identity.rsplit(":", 2)[1])


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


@pytest.mark.timeout(180)
def test_scheduler_replicas_enqueue_each_tick_once_across_a_sigkilled_leader(
    tmp_path: Path,
    settings: Settings,
    client: Client,
    db: Database,
    service_env: dict[str, str],
    schedulers: list[SchedulerProcess],
    chaos_report: Record,
) -> None:
    schedule = tmp_path / "schedule.toml"
    schedule.write_text(EVERY_SECOND, encoding="utf-8")
    began = time.monotonic()
    schedulers += [SchedulerProcess(service_env, schedule) for _ in range(2)]
    first_leader = eventually(lambda: current_leader(db, settings.namespace), timeout=20)
    led_at = datetime.now(UTC)
    assert _pid_of(first_leader) in {s.pid for s in schedulers}, first_leader

    # Half-way: find the leader as an operator would, and kill it.
    _sleep_until(began + KILL_AT)
    listed = run_cli("schedule", "list", "--schedule", str(schedule), "--json", env=service_env)
    assert listed.returncode == 0, listed.stderr
    leader = json.loads(listed.stdout)["leader"]
    victim = next((s for s in schedulers if s.pid == _pid_of(leader)), None)
    assert victim is not None, f"the leader {leader} is none of our replicas {[s.pid for s in schedulers]}"
    victim.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    killed_at = datetime.now(UTC)
    schedulers.append(SchedulerProcess(service_env, schedule))
    new_leader = eventually(
        lambda: (found := current_leader(db, settings.namespace)) != leader and found,
        timeout=30,
        interval=0.02,
    )
    failover_s = time.monotonic() - killed
    victim.process.wait(timeout=10)

    _sleep_until(began + RUN_FOR)
    # Followers first, the leader last: no follower takes over as the replicas stop.
    last_leader = current_leader(db, settings.namespace)
    leader_pid = _pid_of(last_leader) if last_leader else None
    survivors = sorted((s for s in schedulers if s is not victim), key=lambda s: s.pid == leader_pid)
    codes = [s.stop() for s in survivors]
    stopped_at = datetime.now(UTC)
    victim.stop()
    time.sleep(0.5)  # confirmed publishes are counted at once; a margin all the same

    jobs = tick_jobs(db, settings)
    per_tick = Counter(tick for tick, _ in jobs)
    ticks = sorted(per_tick)
    duplicates = {utc: n for utc, n in per_tick.items() if n > 1}
    gaps = [(a, b) for a, b in itertools.pairwise(ticks) if b - a != timedelta(seconds=1)]
    messages = message_count(settings.queue_name("default"))
    created = sorted(created for _, created in jobs)
    first_after_kill = next((c for c in created if c > killed_at), None)
    enqueue_gap = max((b - a for a, b in itertools.pairwise(created)), default=timedelta(0))
    expected = int((stopped_at - led_at).total_seconds())
    outputs = [s.output for s in schedulers]
    chaos_report(
        ticks=len(ticks),
        jobs=len(jobs),
        messages=messages,
        duplicates=len(duplicates),
        gaps=len(gaps),
        expected_ticks_about=expected,
        first_tick=ticks[0].isoformat() if ticks else None,
        last_tick=ticks[-1].isoformat() if ticks else None,
        fault={"signal": "SIGKILL", "at_s": round(killed - began, 1), "leader": leader},
        new_leader_is_replacement=_pid_of(str(new_leader)) == schedulers[-1].pid,
        failover_s=round(failover_s, 2),
        first_enqueue_after_kill_s=(
            round((first_after_kill - killed_at).total_seconds(), 2) if first_after_kill else None
        ),
        max_enqueue_gap_s=round(enqueue_gap.total_seconds(), 2),
        leader_elections=sum(output.count("leader: replica") for output in outputs),
        # A tick enqueued again by the new leader (its predecessor died before recording it) is
        # harmless: the idempotency key returns the first job and sends nothing.
        enqueue_log_lines=sum(output.count(": enqueued job ") for output in outputs),
    )

    logs = "\n\n".join(f"--- replica {s.pid}\n{s.output}" for s in schedulers)
    assert victim.process.returncode == -signal.SIGKILL
    assert codes == [0, 0], logs
    assert duplicates == {}, f"ticks enqueued more than once: {duplicates}"
    assert gaps == [], f"ticks skipped or repeated: {gaps}\n{logs}"
    # One message per tick: no tick was sent twice, none enqueued without its message.
    assert messages == len(ticks) == len(jobs), logs
    assert len(ticks) >= expected - 2, (len(ticks), expected, ticks[:1], ticks[-1:])
    assert ticks[0] < killed_at < ticks[-1]
    assert stopped_at - ticks[-1] < timedelta(seconds=3), (stopped_at, ticks[-1])
    assert new_leader != leader
    assert failover_s < FAILOVER_BOUND, logs
    assert enqueue_gap < timedelta(seconds=FAILOVER_BOUND + 1), logs
    # One election at the start and one after the kill: no flapping.
    assert sum(output.count("leader: replica") for output in outputs) == 2, logs
