"""The Signature middleware on the worker's whole middleware list (in-memory broker, SQLite store):
a refused message never runs, its waiting job is failed with the reason, the message is rejected."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import PriorityQueue
from typing import Any

import dramatiq
import pytest
from dramatiq.broker import MessageProxy
from dramatiq.worker import _WorkerThread

from jobs.actors import declare_actors
from jobs.errors import JobNotFound
from jobs.kinds import KINDS
from jobs.middleware import Lifecycle
from jobs.middleware.signature import Signature
from jobs.services import Services
from jobs.settings import Settings
from jobs.signing import SIGNATURE_OPTION, MessageSigner, SigningKey
from jobs.store import AttemptStore, Database, JobStore, NewJob
from jobs.store.delayed import DelayedStore
from jobs.store.migrate import ensure_database, upgrade
from producers import Client
from tests.unit.test_job_middleware import HERE, QUEUE, HoldingStubBroker, Settled, noop_message
from workers.runtime import worker_middleware

KEY = "unit-test-signing-key-0123456789abcdef"
OTHER = "someone-elses-signing-key-0123456789ab"


@dataclass
class SignedRig:
    broker: HoldingStubBroker
    signature: Signature
    store: AttemptStore
    client: Client  # signs with KEY
    unsigned_client: Client  # a producer without the key
    settled: Settled

    def process(self, message: dramatiq.Message[Any]) -> MessageProxy:
        proxy = MessageProxy(dramatiq.Message.decode(message.encode()))  # as the consumer decodes it
        work: PriorityQueue[Any] = PriorityQueue()
        work.put(None)
        consumers: dict[str, Any] = {QUEUE: self.settled}
        thread = _WorkerThread(broker=self.broker, consumers=consumers, work_queue=work, worker_timeout=100)
        thread.process_message(proxy)
        return proxy

    def sent(self) -> dramatiq.Message[Any]:
        """The last message the clients published (the stub broker's queue)."""
        return dramatiq.Message.decode(self.broker.queues[QUEUE].get_nowait())


def make_rig(tmp_path: Path, *, accept_unsigned: bool = False, row_grace: float = 0.3) -> SignedRig:
    database_url = f"sqlite:///{tmp_path}/jobs.db"
    plain = Settings(broker_url="memory://", database_url=database_url, namespace="unit")
    settings = dataclasses.replace(plain, signing_key=KEY, accept_unsigned=accept_unsigned)
    ensure_database(database_url)
    db = Database(database_url)
    upgrade(db)
    store = AttemptStore(db)
    lifecycle = Lifecycle.build(store, HERE, recheck_after=5.0)
    signer = MessageSigner.from_settings(settings)
    assert signer is not None
    signature = Signature(signer, store, HERE, accept_unsigned=accept_unsigned, row_grace=row_grace)
    broker = HoldingStubBroker(middleware=worker_middleware(lifecycle, None, signature))
    broker.declare_queue(QUEUE)
    broker.hold = lifecycle.delayed.hold
    declare_actors(broker, Services(settings, db), [KINDS["noop"]])
    client = Client(settings, broker=broker, db=db)
    unsigned_client = Client(plain, broker=broker, db=db)
    return SignedRig(broker, signature, store, client, unsigned_client, Settled())


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[SignedRig]:
    rig = make_rig(tmp_path)
    yield rig
    rig.client.close()
    rig.unsigned_client.close()
    rig.broker.close()
    rig.store.db.dispose()


def test_a_signed_job_runs(rig: SignedRig) -> None:
    job = rig.client.enqueue("noop")

    rig.process(rig.sent())

    assert rig.client.get(job.id).status == "succeeded"
    assert rig.settled.acked == [job.id]


def test_an_unsigned_message_of_a_waiting_job_fails_the_job_and_never_runs(rig: SignedRig) -> None:
    job = rig.unsigned_client.enqueue("noop", fail_attempts=1)  # would be retried, had it run

    rig.process(rig.sent())

    failed = rig.client.get(job.id)
    assert failed.status == "failed"
    assert failed.error == "SignatureError: message is not signed"
    (attempt,) = failed.history()
    assert attempt.outcome == "failed"
    assert attempt.worker == HERE.worker_id
    assert rig.settled.nacked == [job.id]  # dead-lettered
    assert rig.signature.refused == 1


def test_an_unsigned_message_with_no_row_is_dead_lettered_and_no_row_is_made(rig: SignedRig) -> None:
    message = noop_message()

    rig.process(message)

    assert rig.settled.nacked == [message.message_id]
    with pytest.raises(JobNotFound):
        rig.client.get(message.message_id)


def test_a_refused_message_that_comes_before_its_row_still_fails_its_job(tmp_path: Path) -> None:
    # Client.enqueue publishes first and writes the row after RabbitMQ's confirm.
    rig = make_rig(tmp_path, row_grace=10.0)
    message = noop_message()
    row = NewJob(id=message.message_id, kind="noop", queue=QUEUE, payload={}, max_retries=0)
    producer = threading.Timer(0.2, JobStore(rig.store.db).create, args=(row,))
    try:
        producer.start()
        rig.process(message)

        failed = rig.client.get(message.message_id)
        assert failed.status == "failed"
        assert failed.error == "SignatureError: message is not signed"
        assert rig.settled.nacked == [message.message_id]
    finally:
        producer.cancel()
        rig.client.close()
        rig.unsigned_client.close()
        rig.store.db.dispose()


def test_an_old_message_with_no_row_is_not_waited_for(
    rig: SignedRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.signature.row_grace = 3600.0  # from its timestamp: this message was published long ago
    message = dataclasses.replace(noop_message(), message_timestamp=int((time.time() - 7200) * 1000))
    lookups: list[str] = []
    look = rig.signature.jobs.get
    monkeypatch.setattr(rig.signature.jobs, "get", lambda job_id: lookups.append(job_id) or look(job_id))

    rig.process(message)

    assert lookups == [message.message_id]  # one look, no wait
    assert rig.settled.nacked == [message.message_id]
    with pytest.raises(JobNotFound):
        rig.client.get(message.message_id)


def test_a_tampered_payload_is_refused_and_its_job_left_alone(rig: SignedRig) -> None:
    job = rig.client.enqueue("noop", sleep=0)
    original = rig.sent()
    tampered = dataclasses.replace(original, kwargs={"sleep": 30})

    rig.process(tampered)

    assert rig.settled.nacked == [job.id]
    assert rig.client.get(job.id).status == "queued"  # a forged copy cannot fail the real job
    rig.process(original)
    assert rig.client.get(job.id).status == "succeeded"


def test_a_message_signed_with_another_key_fails_its_job_with_the_reason(rig: SignedRig) -> None:
    job = rig.unsigned_client.enqueue("noop")
    forged = MessageSigner(SigningKey.of(OTHER)).sign(rig.sent())

    rig.process(forged)

    failed = rig.client.get(job.id)
    assert failed.status == "failed"
    expected = "SignatureError: message signature invalid: made with an unknown key"
    assert (failed.error or "").startswith(expected)


def test_a_retried_job_still_verifies_after_retries_changed_its_message(rig: SignedRig) -> None:
    job = rig.client.enqueue("noop", fail_attempts=1, min_backoff=0.01, max_backoff=0.02)

    rig.process(rig.sent())
    assert rig.client.get(job.id).status == "retrying"
    time.sleep(0.05)
    due: list[dramatiq.Message[Any]] = []
    DelayedStore(rig.store.db).dispatch_due(due.append, namespace="unit")
    assert due[0].options["retries"] == 1
    assert SIGNATURE_OPTION in due[0].options
    rig.process(due[0])

    assert rig.client.get(job.id).status == "succeeded"
    assert rig.signature.refused == 0


def test_accept_unsigned_runs_unsigned_messages_but_refuses_wrong_signatures(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, accept_unsigned=True)
    try:
        plain = rig.unsigned_client.enqueue("noop")
        rig.process(rig.sent())
        forged_job = rig.unsigned_client.enqueue("noop")
        rig.process(MessageSigner(SigningKey.of(OTHER)).sign(rig.sent()))

        assert rig.client.get(plain.id).status == "succeeded"
        assert rig.signature.unsigned_run == 1
        assert rig.client.get(forged_job.id).status == "failed"
        assert rig.signature.refused == 1
    finally:
        rig.client.close()
        rig.unsigned_client.close()
        rig.store.db.dispose()


def test_a_refused_copy_of_a_finished_job_changes_nothing(rig: SignedRig) -> None:
    job = rig.client.enqueue("noop")
    message = rig.sent()
    rig.process(message)
    unsigned = dataclasses.replace(
        message, options={k: v for k, v in message.options.items() if k != SIGNATURE_OPTION}
    )

    rig.process(unsigned)

    assert rig.client.get(job.id).status == "succeeded"
    assert rig.settled.nacked == [job.id]


def test_a_refusal_is_logged_on_one_line_whatever_the_sender_put_in_the_message(
    rig: SignedRig, caplog: pytest.LogCaptureFixture
) -> None:
    forged = dataclasses.replace(noop_message(), actor_name="noop\n2026-12-07 INFO all is well\x1b[2J")

    rig.process(forged)

    (line,) = [r.getMessage() for r in caplog.records if r.name == "conveyor.signature"]
    assert "refused: message is not signed" in line
    assert "\n" not in line
    assert "\x1b" not in line
    assert rig.settled.nacked == [forged.message_id]
