"""The dashboard's pure parts: template filters, chart windows, queue names, and how a worker
process pauses and resumes its consumer threads (no services)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from console.web.formats import ago, clock, count, duration, short_queue
from jobs.admin import overview
from jobs.admin.overview import charts, window
from jobs.admin.pauses import resolve_queue
from jobs.consumer import ChannelBoundConsumer
from jobs.errors import ServiceUnavailable, UnknownQueue
from jobs.settings import Settings
from jobs.store import Database
from jobs.store.migrate import ensure_database, upgrade
from jobs.store.models import JobRow
from workers.pauses import PausableConsumers

NOW = datetime(2026, 12, 7, 6, 0, 30, tzinfo=UTC)


def test_durations_read_at_a_glance() -> None:
    assert duration(None) == ""
    assert duration(0.0421) == "0.042 s"
    assert duration(12.34) == "12.3 s"
    assert duration(600) == "10 min"
    assert duration(9000) == "2.5 h"
    assert duration(3 * 86400) == "3.0 d"


def test_ages_counts_and_clocks() -> None:
    assert ago("2026-12-07T06:00:25+00:00", now=NOW) == "5 s ago"
    assert ago("2026-12-07T06:00:40+00:00", now=NOW) == "just now"  # a clock ahead of ours
    assert ago("2026-12-07T05:00:30Z", now=NOW) == "60 min ago"
    assert ago(None) == ""
    assert ago("not a date") == ""
    assert clock("2026-12-06T03:00:00Z") == "2026-12-06 03:00:00"
    assert count(None) == "–"
    assert count(1234567) == "1,234,567"
    assert short_queue("ns.email", "ns") == "email"


def test_a_window_is_an_hour_of_minutes_or_a_day_of_quarter_hours() -> None:
    hour = window("1h", NOW)
    assert hour.since == NOW - timedelta(hours=1)
    assert hour.bucket_seconds == 60
    day = window("24h", NOW)
    assert day.bucket_seconds == 900
    with pytest.raises(ValueError, match="range must be one of 1h, 24h"):
        window("7d", NOW)


def _finish(db: Database, at: datetime, status: str = "succeeded", queue: str = "ns.default") -> None:
    with db.session() as session:
        session.add(
            JobRow(
                id=str(uuid.uuid4()),
                kind="noop",
                queue=queue,
                status=status,
                payload={},
                created_at=at,
                started_at=at,
                finished_at=at,
            )
        )
        session.commit()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path}/jobs.db"
    ensure_database(url)
    db = Database(url)
    upgrade(db)
    yield db
    db.dispose()


def test_every_bucket_is_charted_and_closed_buckets_are_read_once(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(overview, "CLOSED", overview.ClosedBuckets())
    now = datetime.now(UTC)
    _finish(sqlite_db, now - timedelta(minutes=30))
    _finish(sqlite_db, now - timedelta(minutes=30), "failed")
    _finish(sqlite_db, now - timedelta(minutes=30), queue="ns2.default")  # another namespace's
    _finish(sqlite_db, now - timedelta(minutes=30), queue="nsx.default")  # "ns" is no prefix of it
    first = charts(sqlite_db, "ns", window("1h", now))
    assert len(first["throughput"]) in (61, 62)  # every minute of the hour, empty ones as zeros
    assert first["totals"] == {**first["totals"], "finished": 2, "succeeded": 1, "failed": 1}

    # A job written late into a closed bucket is not seen while that bucket is kept; one in an
    # open bucket (the last two minutes) is.
    _finish(sqlite_db, now - timedelta(minutes=20))
    _finish(sqlite_db, now - timedelta(seconds=30))
    again = charts(sqlite_db, "ns", window("1h", now + timedelta(seconds=1)))
    assert again["totals"]["finished"] == 3
    assert [b["at"] for b in again["throughput"]] == sorted(b["at"] for b in again["throughput"])

    monkeypatch.setattr(overview, "KEEP_SECONDS", 0.0)  # kept figures expire: all read afresh
    assert charts(sqlite_db, "ns", window("1h", now + timedelta(seconds=2)))["totals"]["finished"] == 4


def test_a_queue_is_named_short_full_or_by_its_kind() -> None:
    settings = Settings(namespace="acme")
    assert resolve_queue(settings, "email") == "acme.email"
    assert resolve_queue(settings, "acme.email") == "acme.email"
    assert resolve_queue(settings, "image") == "acme.images"
    with pytest.raises(UnknownQueue, match=r"unknown queue 'mail'; known queues: .*email"):
        resolve_queue(settings, "mail")


@dataclass
class FakeConsumer:
    pausing: bool = False


@dataclass
class FakeThread:
    queue_name: str
    consumer: FakeConsumer | None = field(default_factory=FakeConsumer)
    paused: bool = False
    calls: list[str] = field(default_factory=list)

    def pause(self) -> None:
        self.paused = True
        self.calls.append("pause")

    def resume(self) -> None:
        self.paused = False
        self.calls.append("resume")


def test_a_worker_pauses_and_resumes_exactly_the_consumers_of_paused_queues() -> None:
    threads = {name: FakeThread(name) for name in ("ns.email", "ns.email.DQ", "ns.images")}
    wanted: set[str] = {"ns.email"}
    consumers = PausableConsumers(threads, lambda: set(wanted))
    assert consumers.refresh() == {"ns.email"}
    assert threads["ns.email"].paused
    assert threads["ns.email"].consumer == FakeConsumer(pausing=True)
    assert not threads["ns.email.DQ"].paused  # its delay queue only feeds the paused queue
    assert not threads["ns.images"].paused
    consumers.refresh()
    assert threads["ns.email"].calls == ["pause"]  # once, not every second
    wanted.clear()
    assert consumers.refresh() == set()
    assert threads["ns.email"].calls == ["pause", "resume"]
    assert threads["ns.email"].consumer == FakeConsumer(pausing=False)


def test_a_consumer_thread_of_a_paused_queue_is_paused_as_it_boots() -> None:
    thread = FakeThread("ns.email", consumer=None)
    consumers = PausableConsumers({"ns.email": thread}, lambda: {"ns.email"})
    consumers.boot(thread)
    assert thread.paused
    assert consumers.paused == {"ns.email"}
    consumers.boot(thread)
    assert thread.calls == ["pause"]


def test_when_the_paused_set_cannot_be_read_the_queues_stay_as_they_are() -> None:
    thread = FakeThread("ns.email")
    wanted: list[set[str]] = [{"ns.email"}]

    def read() -> set[str]:
        if not wanted:
            raise ServiceUnavailable("PostgreSQL", "postgresql://db", "connection refused")
        return wanted[0]

    consumers = PausableConsumers({"ns.email": thread}, read)
    consumers.refresh()
    wanted.clear()
    assert consumers.refresh() == {"ns.email"}
    assert thread.paused


def test_a_closed_consumer_settles_nothing_and_a_pausing_one_delivers_nothing() -> None:
    consumer = ChannelBoundConsumer.__new__(ChannelBoundConsumer)
    consumer.pausing = True
    assert consumer.__next__() is None  # never reaches pika
    consumer.closed = True

    @dataclass
    class Message:
        message_id: str = "m1"

    consumer.ack(Message())  # no channel to call: dropped, RabbitMQ delivers it again
    consumer.nack(Message())
