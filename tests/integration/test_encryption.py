"""Encryption at rest with a real PostgreSQL, RabbitMQ and worker: what the rows and files hold
(read raw), what readers see (decrypted), and key rotation."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from sqlalchemy import create_engine, text

from jobs import UnknownKey, crypto
from jobs.admin.keys import KeyAdmin
from jobs.admin.operations import Operations
from jobs.crypto import SEGMENT, generate_key
from jobs.keyring import Keyring
from jobs.settings import Settings
from jobs.status import AttemptOutcome
from jobs.store import AttemptEnd, AttemptStore, Database, JobSelection, JobStore, NewJob, rekey
from jobs.store.artifacts import ArtifactStore
from jobs.store.batched import BatchedAttemptStore
from jobs.store.delayed import DelayedStore, HeldMessage
from jobs.store.deliveries import DeliveryStore
from jobs.store.migrate import ensure_database, upgrade
from jobs.store.orphans import OrphanStore
from jobs.store.reporting import JobsReportStore
from producers import Client
from tests.conftest import PG_SERVER
from tests.helpers import WorkerProcess, run_cli, seen_noop
from tests.images import jpeg, opened
from tests.integration.test_batched_store import WORKER

pytestmark = pytest.mark.integration

KEY_A = generate_key("a")
KEY_B = generate_key("b")
MARKER = "ada.lovelace.secret@example.com"


def keyed(url: str, keys: str | None) -> Database:
    return Database(url, keyring=Keyring.parse(keys) if keys else None)


def raw(db: Database, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows as PostgreSQL holds them (no decryption: plain SQL through the test's pool)."""
    with db.transaction() as connection:
        result = connection.execute(text(sql), params)
        return [tuple(row) for row in result] if result.returns_rows else []


@pytest.fixture(scope="module")
def database_url(session_token: str) -> Iterator[str]:
    """This module's own database: its sealed rows must not reach the other tests of the
    session, which read the shared database without keys (and would rightly fail on them)."""
    yield from _fresh_database(f"conveyor_test_{session_token}_sealed")


@pytest.fixture
def fresh_url(session_token: str) -> Iterator[str]:
    """A database of this test alone (rotation walks every row of it)."""
    yield from _fresh_database(f"conveyor_test_{session_token}_keys_{secrets.token_hex(3)}")


def _fresh_database(name: str) -> Iterator[str]:
    url = f"{PG_SERVER}/{name}"
    ensure_database(url)
    db = Database(url)
    upgrade(db)
    db.dispose()
    yield url
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sealed_client(settings: Settings, tmp_path: Path) -> Iterator[Client]:
    keys = settings.with_overrides(encryption_keys=KEY_A, artifact_url=f"file://{tmp_path}/artifacts")
    with Client(keys) as client:
        yield client


def test_a_jobs_values_are_ciphertext_in_its_rows_and_plaintext_to_the_client_and_cli(
    sealed_client: Client,
    db: Database,
    start_worker: WorkerProcess.Factory,
    service_env: dict[str, str],
    tmp_path: Path,
) -> None:
    keys = {"CONVEYOR_ENCRYPTION_KEYS": KEY_A, "CONVEYOR_SMTP_URL": f"file://{tmp_path}/outbox"}
    start_worker("--processes", "1", "--threads", "2", env=keys)
    email = sealed_client.send_email(MARKER, "welcome", {"name": "Ada Marker-Name"})
    flaky = sealed_client.enqueue("noop", fail_attempts=1, min_backoff=0.05, max_backoff=0.1)
    assert email.wait(timeout=30)["accepted"] == [MARKER]
    assert flaky.wait(timeout=30) == {"attempt": 2, "slept": 0.0}

    ids = [email.id, flaky.id]
    for payload, result, error in raw(
        db, "SELECT payload::text, result::text, error FROM jobs WHERE id::text = ANY(:ids)", ids=ids
    ):
        assert MARKER not in payload
        assert "Marker-Name" not in payload
        assert '"$enc": "v1"' in payload
        assert '"$enc": "v1"' in result
        assert "attempt" not in result
        assert error is None
    ((error, traceback),) = raw(
        db, "SELECT error, traceback FROM job_attempts WHERE job_id = :id AND attempt = 1", id=flaky.id
    )
    assert error.startswith("$enc:v1:a:")
    assert traceback.startswith("$enc:v1:a:")
    ((accepted,),) = raw(db, "SELECT accepted::text FROM email_deliveries WHERE job_id = :id", id=email.id)
    assert MARKER not in accepted

    info = sealed_client.get(email.id)
    assert info.info.payload["to"] == [MARKER]
    assert info.result is not None
    assert info.result["accepted"] == [MARKER]
    history = sealed_client.get(flaky.id).history()
    assert "noop asked to fail attempt 1" in (history[0].error or "")
    assert "TransientError" in (history[0].traceback or "")

    shown = run_cli("jobs", "show", email.id, "--json", env={**service_env, **keys})
    assert shown.returncode == 0, shown.stderr
    assert MARKER in shown.stdout
    unkeyed = run_cli("jobs", "show", email.id, env=service_env)
    assert unkeyed.returncode == 1
    assert "key id 'a'" in unkeyed.stderr


def test_a_delayed_jobs_held_message_is_sealed_and_runs_when_due(
    sealed_client: Client, db: Database, start_worker: WorkerProcess.Factory
) -> None:
    job = sealed_client.enqueue("noop", sleep=0.01, delay=1.5)
    ((body,),) = raw(db, "SELECT body FROM delayed_messages WHERE message_id = :id", id=job.id)
    assert bytes(body).startswith(crypto.BYTES_MAGIC)
    assert b"noop" not in bytes(body)
    start_worker("--processes", "1", "--threads", "1", env={"CONVEYOR_ENCRYPTION_KEYS": KEY_A})
    assert job.wait(timeout=30)["slept"] == 0.01


def test_the_batched_writer_seals_starts_and_ends_written_in_shared_batches(
    database_url: str, namespace: str
) -> None:
    db = keyed(database_url, KEY_A)
    store = BatchedAttemptStore(db)
    messages = [seen_noop(f"{namespace}.default") for _ in range(60)]
    try:

        def run(index: int) -> None:
            seen = messages[index]
            started = store.start(seen, WORKER)
            assert started is not None
            end = AttemptEnd(AttemptOutcome.FAILED, error=f"boom {MARKER} {index}", traceback=f"tb {MARKER}")
            if index % 2:
                end = AttemptEnd(AttemptOutcome.SUCCEEDED, result={"to": MARKER, "i": index})
            assert store.finish_detached(seen.job_id, started.number, end).result(timeout=30)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(messages))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        store.close()
    ids = [m.job_id for m in messages]
    rows = raw(
        db,
        "SELECT payload::text, coalesce(result::text, error) FROM jobs WHERE id::text = ANY(:ids)",
        ids=ids,
    )
    assert len(rows) == 60
    for payload, outcome in rows:
        assert '"$enc"' in payload
        assert MARKER not in outcome
        assert "$enc" in outcome
    for error, traceback in raw(
        db,
        "SELECT error, traceback FROM job_attempts WHERE job_id::text = ANY(:ids) AND error IS NOT NULL",
        ids=ids,
    ):
        assert error.startswith("$enc:v1:a:")
        assert traceback.startswith("$enc:v1:a:")
    found = {info.id: info for info in JobStore(db).by_ids(ids)}
    assert found[ids[1]].result == {"to": MARKER, "i": 1}
    assert found[ids[0]].error == f"boom {MARKER} 0"
    assert found[ids[0]].payload == {"sleep": 0}
    assert JobStore(db).attempts(ids[0])[0].traceback == f"tb {MARKER}"
    db.dispose()


def test_artifacts_are_ciphertext_on_disk_and_in_rows_and_read_as_plaintext(
    database_url: str, tmp_path: Path
) -> None:
    db = keyed(database_url, KEY_A)
    data = (MARKER.encode() + bytes(range(256))) * (3 * SEGMENT // 256)
    files = ArtifactStore(db, f"file://{tmp_path}")
    info = files.put(data, name="secret.bin")
    assert info.location is not None
    on_disk = Path(info.location.removeprefix("file://")).read_bytes()
    assert on_disk.startswith(crypto.FILE_MAGIC)
    assert MARKER.encode() not in on_disk
    assert files.read(info.id)[1] == data
    with files.source(info.id) as (_, handle):
        handle.seek(SEGMENT + 3)
        assert handle.read(10) == data[SEGMENT + 3 : SEGMENT + 13]
    in_row = ArtifactStore(db).put(data[:1000], name="row.bin")
    ((stored,),) = raw(db, "SELECT data FROM artifacts WHERE id = :id", id=in_row.id)
    assert MARKER.encode() not in bytes(stored)
    assert ArtifactStore(db).read(in_row.id)[1] == data[:1000]
    db.dispose()


def fill(url: str, keys: str | None, tmp_path: Path, count: int = 25) -> dict[str, Any]:
    """Jobs, attempts, a delivery, artifacts and a held message written with ``keys``."""
    db = keyed(url, keys)
    jobs, attempts = JobStore(db), AttemptStore(db)
    ids = []
    for i in range(count):
        seen = seen_noop("t.default")
        jobs.create(NewJob(seen.job_id, "noop", seen.queue, {"to": MARKER, "i": i}, max_retries=3))
        started = attempts.start(seen, WORKER)
        assert started is not None
        end = AttemptEnd(AttemptOutcome.FAILED, error=f"e {MARKER}", traceback="tb")
        attempts.finish(seen.job_id, started.number, end)
        ids.append(seen.job_id)
    DeliveryStore(db).mark_sent(ids[0], "<m@x>", [MARKER], {"b@x.org": "550 no"})
    artifact = ArtifactStore(db, f"file://{tmp_path}").put(
        MARKER.encode() * 5000, name="a.bin", job_id=ids[0]
    )
    in_row = ArtifactStore(db).put(MARKER.encode(), name="r.bin")
    db.dispose()
    return {"ids": ids, "artifact": artifact.id, "in_row": in_row.id}


def check_readable(url: str, keys: str, made: dict[str, Any], tmp_path: Path) -> None:
    db = keyed(url, keys)
    try:
        jobs = JobStore(db)
        assert [j.payload["to"] for j in jobs.by_ids(made["ids"])] == [MARKER] * len(made["ids"])
        assert jobs.get(made["ids"][3]).error == f"e {MARKER}"
        assert jobs.attempts(made["ids"][3])[0].error == f"e {MARKER}"
        delivery = DeliveryStore(db).get(made["ids"][0])
        assert delivery is not None
        assert delivery.accepted == [MARKER]
        assert ArtifactStore(db, f"file://{tmp_path}").read(made["artifact"])[1] == MARKER.encode() * 5000
        assert ArtifactStore(db).read(made["in_row"])[1] == MARKER.encode()
    finally:
        db.dispose()


def test_rotation_from_key_a_to_b_then_removing_a_keeps_everything_readable(
    fresh_url: str, tmp_path: Path
) -> None:
    made = fill(fresh_url, KEY_A, tmp_path)
    both = keyed(fresh_url, f"{KEY_B},{KEY_A}")
    rotation = KeyAdmin(both).rotate()
    assert rotation.tables["jobs"].resealed == {"a": 25 * 2}  # payload and error
    assert rotation.tables["artifact_files"].resealed == {"a": 1}
    status = KeyAdmin(both).status()
    assert set(status.totals()) == {"b"}
    assert status.retirable() == ["a"]
    both.dispose()
    check_readable(fresh_url, KEY_B, made, tmp_path)
    with pytest.raises(UnknownKey, match="'b'"):
        check_readable(fresh_url, KEY_A, made, tmp_path)


def test_rotate_encrypts_a_store_written_in_the_clear_shown_by_the_cli(
    fresh_url: str, tmp_path: Path, service_env: dict[str, str]
) -> None:
    made = fill(fresh_url, None, tmp_path, count=5)
    check_readable(fresh_url, KEY_A, made, tmp_path)  # mixed mode: the clear values read as they are
    env = {**service_env, "CONVEYOR_DATABASE_URL": fresh_url, "CONVEYOR_ENCRYPTION_KEYS": KEY_A}
    before = run_cli("keys", "status", "--json", env=env)
    assert before.returncode == 0, before.stderr
    # jobs: 5 payloads + 5 errors; attempts: 5 errors + 5 tracebacks; a delivery's accepted and
    # rejected; an artifact in its row; an artifact file.
    assert json.loads(before.stdout)["totals"] == {"plaintext": 10 + 10 + 2 + 1 + 1}
    rotated = run_cli("keys", "rotate", "--json", env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["tables"]["jobs"]["resealed_from"] == {"plaintext": 10}
    after = json.loads(run_cli("keys", "status", "--json", env=env).stdout)
    assert set(after["totals"]) == {"a"}
    db = keyed(fresh_url, None)
    ((payload,),) = raw(db, "SELECT payload::text FROM jobs WHERE id = :id", id=made["ids"][0])
    assert MARKER not in payload
    db.dispose()
    check_readable(fresh_url, KEY_A, made, tmp_path)
    table = run_cli("keys", "status", env=env)
    assert "jobs.payload" in table.stdout
    audit = json.loads(run_cli("audit", "--action", "keys", "--json", env=env).stdout)
    assert [(row["action"], row["outcome"]) for row in audit] == [("keys.rotate", "ok")]


def test_an_interrupted_rotation_resumes_and_skips_what_is_done(
    fresh_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = fill(fresh_url, KEY_A, tmp_path, count=30)
    monkeypatch.setattr(rekey, "BATCH", 10)
    both = keyed(fresh_url, f"{KEY_B},{KEY_A}")
    admin = KeyAdmin(both)
    reseal = rekey.KeyStore._reseal_batch
    calls = []

    def stop_after_two(self: rekey.KeyStore, *args: Any) -> None:
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        reseal(self, *args)

    monkeypatch.setattr(rekey.KeyStore, "_reseal_batch", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        admin.rotate()
    monkeypatch.setattr(rekey.KeyStore, "_reseal_batch", reseal)
    assert admin.status().columns["jobs.payload"] == {"b": 20, "a": 10}
    rotation = admin.rotate()
    assert rotation.tables["jobs"].current == 20 * 2
    assert rotation.tables["jobs"].resealed == {"a": 10 * 2}
    assert set(admin.status().totals()) == {"b"}
    both.dispose()
    check_readable(fresh_url, KEY_B, made, tmp_path)


def test_a_value_rewritten_during_rotation_is_kept_as_its_writer_sealed_it(
    fresh_url: str, tmp_path: Path
) -> None:
    made = fill(fresh_url, KEY_A, tmp_path, count=3)
    both = keyed(fresh_url, f"{KEY_B},{KEY_A}")
    store = rekey.KeyStore(both)
    jobs_table = rekey.SEALED[0]
    (stale,) = list(store._batches(jobs_table))
    job_id = made["ids"][1]
    rewritten = both.sealer.seal_text("rewritten", crypto.ERROR, job_id)  # as a worker would write it
    raw(both, "UPDATE jobs SET error = :error WHERE id = :id", error=rewritten, id=job_id)
    report = rekey.TableRotation()
    store._reseal_batch(jobs_table, stale, report)
    assert report.raced == 1
    assert JobStore(both).get(made["ids"][1]).error == "rewritten"
    assert store.rotate_table(jobs_table).raced == 0
    assert set(KeyAdmin(both).status().columns["jobs.error"]) == {"b"}
    both.dispose()


def test_jobs_are_found_by_the_text_of_their_encrypted_error(database_url: str, namespace: str) -> None:
    db = keyed(database_url, KEY_A)
    attempts, jobs = AttemptStore(db), JobStore(db)
    queue = f"{namespace}.default"
    ids = []
    for i in range(5):
        seen = seen_noop(queue)
        started = attempts.start(seen, WORKER)
        assert started is not None
        attempts.finish(
            seen.job_id, started.number, AttemptEnd(AttemptOutcome.FAILED, error=f"Boom number {i}")
        )
        ids.append(seen.job_id)
    assert [j.id for j in jobs.find(queue=queue, error="number 3")] == [ids[3]]
    assert [j.id for j in jobs.find(queue=queue, error="BOOM", limit=2, offset=1)] == [ids[3], ids[2]]
    assert sorted(jobs.ids(JobSelection(queue=queue, error="boom"))) == sorted(ids)
    db.dispose()


def test_a_held_message_that_does_not_open_stays_held_without_holding_up_the_others(
    database_url: str, namespace: str
) -> None:
    ours, theirs = keyed(database_url, KEY_A), keyed(database_url, KEY_B)
    past = datetime.now(UTC) - timedelta(seconds=1)

    def message() -> dramatiq.Message[Any]:
        return dramatiq.Message(
            queue_name=f"{namespace}.default", actor_name="noop", args=(), kwargs={}, options={}
        )

    readable, unreadable = message(), message()
    DelayedStore(theirs).hold(HeldMessage.of(unreadable, past - timedelta(seconds=1)))  # due first
    DelayedStore(ours).hold(HeldMessage.of(readable, past))
    published: list[str] = []
    assert DelayedStore(ours).dispatch_due(lambda m: published.append(m.message_id), namespace=namespace) == 1
    assert published == [readable.message_id]
    left = raw(ours, "SELECT message_id FROM delayed_messages WHERE queue = :q", q=f"{namespace}.default")
    assert left == [(unreadable.message_id,)]
    ours.dispose()
    theirs.dispose()


def test_an_orphan_whose_payload_does_not_open_is_left_alone_and_the_others_are_found(
    database_url: str, namespace: str
) -> None:
    ours, theirs = keyed(database_url, KEY_A), keyed(database_url, KEY_B)
    queue = f"{namespace}.default"
    readable, unreadable = seen_noop(queue), seen_noop(queue)
    JobStore(ours).create(NewJob(readable.job_id, "noop", queue, {"sleep": 0}, max_retries=3))
    JobStore(theirs).create(NewJob(unreadable.job_id, "noop", queue, {"sleep": 0}, max_retries=3))
    found = OrphanStore(ours).candidates(namespace, datetime.now(UTC) + timedelta(seconds=5))
    assert [(o.job_id, o.payload) for o in found] == [(readable.job_id, {"sleep": 0})]
    ours.dispose()
    theirs.dispose()


def test_an_image_job_reads_its_sealed_source_and_seals_its_outputs(
    sealed_client: Client, start_worker: WorkerProcess.Factory
) -> None:
    folder = sealed_client.settings.artifact_url
    start_worker(
        "--processes",
        "1",
        "--threads",
        "1",
        env={"CONVEYOR_ENCRYPTION_KEYS": KEY_A, "CONVEYOR_ARTIFACT_URL": folder},
    )
    photo = jpeg((1600, 1200), orientation=6, gps=True)
    source = sealed_client.put_artifact(photo, name="photo.jpg")
    job = sealed_client.process_image(
        source, [{"op": "thumbnail", "width": 256, "height": 256}], format="png"
    )
    (artifact,) = job.wait(timeout=60)["artifacts"]
    data = sealed_client.get_artifact(artifact["id"])
    assert opened(data).size == (artifact["width"], artifact["height"])
    for info in (sealed_client.artifacts.info(source), sealed_client.artifacts.info(artifact["id"])):
        assert info.location is not None
        on_disk = Path(info.location.removeprefix("file://")).read_bytes()
        assert on_disk.startswith(crypto.FILE_MAGIC)
        assert b"PNG" not in on_disk[:64]
        assert b"JFIF" not in on_disk[:64]


def test_the_jobs_summary_reads_encrypted_errors_in_its_top_errors_and_csv_rows(
    fresh_url: str, namespace: str
) -> None:
    db = keyed(fresh_url, KEY_A)
    attempts = AttemptStore(db)
    since = datetime.now(UTC) - timedelta(minutes=1)
    for error in ["SMTP 550 for ada@example.com", "SMTP 550 for ada@example.com", "Timeout"]:
        seen = seen_noop(f"{namespace}.default")
        started = attempts.start(seen, WORKER)
        assert started is not None
        attempts.finish(seen.job_id, started.number, AttemptEnd(AttemptOutcome.FAILED, error=error))
    until = datetime.now(UTC) + timedelta(minutes=1)
    store = JobsReportStore(db)
    with store.window(since, until) as window:
        assert window.top_errors(5) == [("SMTP 550 for ada@example.com", 2), ("Timeout", 1)]
    rows = list(store.rows(since, until, ["status", "error"], 100))
    assert sorted(rows) == [("failed", "SMTP 550 for ada@example.com")] * 2 + [("failed", "Timeout")]
    db.dispose()


def test_rotation_rehashes_subjects_so_gdpr_finds_every_job_once_the_old_key_is_gone(
    fresh_url: str, settings: Settings
) -> None:
    # Keyed subject hashes (jobs.subjects) follow the key: after rotating A -> B and removing A,
    # a GDPR lookup under B alone must still find the job hashed under A, and the job stored
    # before encryption was on (in the clear, with no hashes at all).
    subject = f"grace.{secrets.token_hex(3)}@example.com"
    plain, sealed_db = Database(fresh_url), keyed(fresh_url, KEY_A)
    with Client(settings.with_overrides(database_url=fresh_url), db=plain) as client:
        clear = client.send_email(subject, "welcome", {"name": "Grace"}, delay=3600).id
    with_a = settings.with_overrides(database_url=fresh_url, encryption_keys=KEY_A)
    with Client(with_a, db=sealed_db) as client:
        sealed = client.send_email(subject, "welcome", {"name": "Grace"}, delay=3600).id
    plain.dispose()
    sealed_db.dispose()

    both = keyed(fresh_url, f"{KEY_B},{KEY_A}")
    rotation = KeyAdmin(both).rotate()
    assert rotation.tables[rekey.SUBJECTS].resealed == {"hashes": 2}
    assert KeyAdmin(both).rotate().tables[rekey.SUBJECTS].resealed == {}  # nothing left to do
    both.dispose()

    only_b = keyed(fresh_url, KEY_B)
    found = Operations(settings.with_overrides(database_url=fresh_url, encryption_keys=KEY_B), only_b)
    records = found.subjects.find(subject)
    assert records.lookup == "hash"
    assert set(records.records.job_ids) == {clear, sealed}
    only_b.dispose()
