"""The job middleware, one concern each, in the order their hooks need.

Each message goes through Dramatiq's own ``WorkerThread.process_message`` on an in-memory
broker carrying the worker's middleware list, over a throw-away SQLite store.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from queue import PriorityQueue
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.worker import _WorkerThread

from jobs.actors import declare_actors
from jobs.broker import HoldSink
from jobs.consumer import ChannelBoundConsumer
from jobs.context import current_job, set_current_job
from jobs.errors import JobNotFound
from jobs.kinds import KINDS
from jobs.middleware import Lifecycle
from jobs.middleware.heartbeat import Heartbeat, Replica
from jobs.middleware.signature import Signature
from jobs.middleware.state import Attempt
from jobs.middleware.takeover import RECHECKS_OPTION
from jobs.services import Services
from jobs.settings import Settings
from jobs.signing import MessageSigner, SigningKey
from jobs.store import AttemptStore, Database, WorkerIdentity
from jobs.store.delayed import DelayedStore
from jobs.store.migrate import ensure_database, upgrade
from producers import Client
from tests.helpers import seen_noop
from workers.runtime import worker_middleware

QUEUE = "unit.default"
HERE = WorkerIdentity(worker_id="here:1:abc", host="here", pid=1)
ELSEWHERE = WorkerIdentity(worker_id="elsewhere:2:def", host="elsewhere", pid=2)


class HoldingStubBroker(StubBroker):
    """The in-memory broker, with delayed messages going to a hold sink as on RabbitMQ."""

    hold: HoldSink | None = None

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        if delay is None or self.hold is None:
            return super().enqueue(message, delay=delay)
        self.hold(message, datetime.now(UTC) + timedelta(milliseconds=delay))
        return message


@dataclass
class Settled:
    """Stands for the consumer thread: what Dramatiq would acknowledge or reject."""

    acked: list[str] = field(default_factory=list)
    nacked: list[str] = field(default_factory=list)

    def post_process_message(self, message: MessageProxy) -> None:
        (self.nacked if message.failed else self.acked).append(message.message_id)


@dataclass
class Rig:
    broker: HoldingStubBroker
    lifecycle: Lifecycle
    store: AttemptStore
    client: Client
    settled: Settled
    alive: dict[str, bool]

    def process(self, message: dramatiq.Message[Any], **attributes: Any) -> MessageProxy:
        """Run ``message`` as a worker thread does: every hook, the actor, then its settlement."""
        proxy = MessageProxy(message)
        for name, value in attributes.items():
            setattr(proxy, name, value)
        work: PriorityQueue[Any] = PriorityQueue()
        work.put(None)  # ``process_message`` marks one task done
        consumers: dict[str, Any] = {QUEUE: self.settled}
        thread = _WorkerThread(broker=self.broker, consumers=consumers, work_queue=work, worker_timeout=100)
        thread.process_message(proxy)
        return proxy

    def job(self, job_id: str) -> Any:
        return self.client.get(job_id)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    database_url = f"sqlite:///{tmp_path}/jobs.db"
    settings = Settings(broker_url="memory://", database_url=database_url, namespace="unit")
    ensure_database(settings.database_url)
    db = Database(settings.database_url)
    upgrade(db)
    store = AttemptStore(db)
    alive: dict[str, bool] = {}
    lifecycle = Lifecycle.build(store, HERE, alive=alive.get, recheck_after=5.0)
    broker = HoldingStubBroker(middleware=worker_middleware(lifecycle))
    broker.declare_queue(QUEUE)
    broker.hold = lifecycle.delayed.hold
    declare_actors(broker, Services(settings, db), [KINDS["noop"]])
    client = Client(settings, broker=broker, db=db)
    yield Rig(broker, lifecycle, store, client, Settled(), alive)
    set_current_job(None)
    client.close()
    broker.close()
    db.dispose()


def noop_message(message_id: str | None = None, **options: Any) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=QUEUE,
        actor_name=KINDS["noop"].actor_name,
        args=(),
        kwargs=options.pop("kwargs", {}),
        options=options,
        message_id=message_id or str(uuid.uuid4()),
    )


def test_the_worker_middleware_are_built_in_the_order_their_hooks_need(tmp_path: Path) -> None:
    lifecycle = Lifecycle.build(AttemptStore(Database(f"sqlite:///{tmp_path}/x.db")), HERE)
    heartbeat = Heartbeat(
        redis.Redis(), namespace="unit", replica=Replica.create(processes=1), threads=1, ttl=30
    )

    signer = MessageSigner(SigningKey.of("k" * 32))
    signature = Signature(signer, lifecycle.attempts, HERE)

    built = [type(m).__name__ for m in worker_middleware(lifecycle, heartbeat, signature)]

    assert built == [
        "Heartbeat",  # counts every message before anything may skip it
        "Signature",  # refuses an unsigned or forged message before anything else acts on it
        "StaleDeliveries",  # a message of a closed channel is skipped before anything records
        "Tracing",  # the trace id is known before the start is written; the span outlives the end
        "AgeLimit",
        "TimeLimit",
        "ShutdownNotifications",
        "Callbacks",
        "Pipelines",
        "CurrentMessage",
        "Settle",  # consumer-thread hooks only
        "Delayed",  # consumer-thread hooks only (and the broker's hold sink)
        "Promote",  # worker boot and shutdown hooks only (its thread writes long runs' starts)
        "InFlight",  # lets go of a job after the recorder's after_* hooks
        "Recording",  # starts the attempt
        "TakeOver",  # looks at a start the store refused
        "LostRuns",  # after whichever of the two started the attempt
        "Retries",  # decides first, so that the recorder stores the decision
    ]
    assert type(worker_middleware(lifecycle)[0]).__name__ == "StaleDeliveries"  # without a heartbeat
    assert "Signature" not in [type(m).__name__ for m in worker_middleware(lifecycle, heartbeat)]  # no key


def test_a_failing_message_is_recorded_retrying_with_its_eta_then_failed_after_max_retries(rig: Rig) -> None:
    message = noop_message(kwargs={"fail_attempts": 5}, max_retries=1, min_backoff=10, max_backoff=20)

    rig.process(message)

    job = rig.job(message.message_id)
    assert job.status == "retrying"
    assert job.eta is not None
    assert [a.outcome for a in job.history()] == ["retrying"]
    # The retry went into the transaction of the attempt's end, due when the job says.
    count, due_at = DelayedStore(rig.store.db).count_by_queue()[QUEUE]
    assert count == 1
    assert due_at is not None
    assert due_at.replace(tzinfo=UTC) == job.eta  # SQLite keeps no zone
    assert rig.settled.acked == [message.message_id]

    time.sleep(0.05)  # the retry's backoff
    due: list[dramatiq.Message[Any]] = []
    assert DelayedStore(rig.store.db).dispatch_due(due.append, namespace="unit") == 1
    rig.process(due[0])

    job = rig.job(message.message_id)
    assert job.status == "failed"
    assert [a.outcome for a in job.history()] == ["retrying", "failed"]
    assert "noop asked to fail attempt 2" in (job.error or "")
    assert rig.settled.nacked == [message.message_id]  # dead-lettered
    assert current_job() is None
    assert not rig.lifecycle.in_flight.jobs.runs(message.message_id)


def test_a_job_counts_as_running_in_its_process_until_its_end_is_handed_to_the_store(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Else a copy of its message, in that gap, would find it idle and run it a second time."""
    seen_running: list[bool] = []
    finish_detached = rig.store.finish_detached

    def watched(job_id: str, *args: Any, **kwargs: Any) -> Any:
        seen_running.append(rig.lifecycle.in_flight.jobs.runs(job_id))
        return finish_detached(job_id, *args, **kwargs)

    monkeypatch.setattr(rig.store, "finish_detached", watched)
    message = noop_message()

    rig.process(message)

    assert seen_running == [True]
    assert rig.job(message.message_id).status == "succeeded"
    assert not rig.lifecycle.in_flight.jobs.runs(message.message_id)


def test_a_message_of_a_closed_channel_is_never_recorded(rig: Rig) -> None:
    closed = ChannelBoundConsumer.__new__(ChannelBoundConsumer)
    closed.closed = True
    message = noop_message()

    rig.process(message, conveyor_delivered_by=closed)

    with pytest.raises(JobNotFound):
        rig.job(message.message_id)
    assert current_job() is None
    assert not rig.lifecycle.in_flight.jobs.runs(message.message_id)


def test_a_redelivered_message_of_a_finished_job_is_skipped_and_leaves_nothing_in_flight(rig: Rig) -> None:
    message = noop_message()
    rig.process(message)
    assert rig.job(message.message_id).status == "succeeded"

    rig.process(noop_message(message.message_id))

    assert rig.job(message.message_id).attempts == 1
    assert rig.settled.acked == [message.message_id, message.message_id]
    assert current_job() is None
    assert rig.lifecycle.in_flight.jobs.current() is None
    assert not rig.lifecycle.in_flight.jobs.runs(message.message_id)


def test_a_copy_of_a_job_running_on_a_live_worker_waits_in_the_store(rig: Rig) -> None:
    job_id = str(uuid.uuid4())
    assert rig.store.start(seen_noop(QUEUE, job_id), ELSEWHERE) is not None
    rig.alive[ELSEWHERE.worker_id] = True

    rig.process(noop_message(job_id))

    assert [a.attempt for a in rig.job(job_id).history()] == [1]
    assert rig.job(job_id).status == "running"
    assert DelayedStore(rig.store.db).count_by_queue()[QUEUE][0] == 1
    assert rig.lifecycle.in_flight.jobs.current() is None

    # Its worker is gone: the next copy takes the job over.
    rig.alive[ELSEWHERE.worker_id] = False
    rig.process(noop_message(job_id, **{RECHECKS_OPTION: 1}))

    assert [a.outcome for a in rig.job(job_id).history()] == ["lost", "succeeded"]


def test_a_job_that_lost_more_runs_than_its_budget_fails_without_running(rig: Rig) -> None:
    job_id = str(uuid.uuid4())
    assert rig.store.start(seen_noop(QUEUE, job_id), ELSEWHERE) is not None  # its worker dies
    message = noop_message(job_id, max_retries=0, kwargs={"fail_attempts": 5})

    rig.process(message)

    job = rig.job(job_id)
    assert job.status == "failed"
    assert job.error == "WorkerLost: gave up after 1 runs that ended with their worker dying"
    assert [a.outcome for a in job.history()] == ["lost", "failed"]
    assert rig.settled.nacked == [job_id]
    assert current_job() is None
    assert not rig.lifecycle.in_flight.jobs.runs(job_id)


def test_a_forced_stop_records_the_jobs_still_running_as_interrupted(rig: Rig) -> None:
    seen = seen_noop(QUEUE)
    started = rig.store.start(seen, HERE)
    assert started is not None
    attempt = Attempt(seen, KINDS["noop"])
    rig.lifecycle.in_flight.jobs.enter(attempt, started, rig.store)

    assert rig.lifecycle.in_flight.interrupt("a test") == 1

    job = rig.job(seen.job_id)
    assert [a.outcome for a in job.history()] == ["interrupted"]
    assert rig.lifecycle.in_flight.jobs.current() is None
