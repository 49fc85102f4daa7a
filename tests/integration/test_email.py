"""Email jobs through RabbitMQ, PostgreSQL, `conveyor worker` and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import os
import signal
import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import dramatiq
import pytest
import trustme
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import update

from jobs.errors import JobFailed
from jobs.settings import Settings
from jobs.store import Database, JobStore
from jobs.store.models import JobRow
from producers import Client, JobStatus
from tests.helpers import WorkerProcess, eventually, running_pid, secret
from tests.smtp import SmtpServer

pytestmark = pytest.mark.integration
FAST_RETRY = {"min_backoff": 0.2, "max_backoff": 0.5}


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def mail_worker(smtp: SmtpServer, start_worker: WorkerProcess.Factory) -> WorkerProcess:
    # The server is set up first so that it is stopped last, after the worker let go of it.
    return start_worker("--processes", "1", "--threads", "2", env={"CONVEYOR_SMTP_URL": smtp.url})


def test_an_email_arrives_with_text_and_html_parts_subject_and_message_id(
    client: Client, smtp: SmtpServer, mail_worker: WorkerProcess
) -> None:
    job = client.send_email(
        "Ada Lovelace <ada@example.com>",
        "password_reset",
        {"name": "Ada <& Co>", "reset_url": "https://example.com/r?a=1&b=2"},
        cc="bob@example.com",
    )

    result = job.wait(timeout=20)

    (received,) = smtp.received
    message = received.message
    assert message["Subject"] == "Reset your password"
    assert message["Message-ID"] == f"<{job.id}@localhost>" == result["message_id"]
    assert message["From"] == "Conveyor <noreply@localhost>"
    assert message["To"] == "Ada Lovelace <ada@example.com>"
    assert message["Date"]
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Hello Ada <& Co>," in text
    assert "https://example.com/r?a=1&b=2" in text
    assert "Hello Ada &lt;&amp; Co&gt;," in html
    assert "r?a=1&amp;b=2" in html
    assert sorted(received.recipients) == ["ada@example.com", "bob@example.com"]
    assert result["accepted"] == ["ada@example.com", "bob@example.com"]
    assert result["rejected"] == {}


def test_attachments_arrive_in_a_mixed_message(
    client: Client, smtp: SmtpServer, mail_worker: WorkerProcess
) -> None:
    data = os.urandom(50_000)
    artifact = client.put_artifact(data, name="report.bin")
    job = client.send_email("ada@example.com", "welcome", {"name": "Ada"}, attachments=[artifact])

    job.wait(timeout=20)

    message = smtp.received[0].message
    assert message.get_content_type() == "multipart/mixed"
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_filename() == "report.bin"
    assert attachment.get_content() == data


def test_451_twice_then_success_delivers_once_after_three_attempts(
    client: Client, smtp: SmtpServer, mail_worker: WorkerProcess
) -> None:
    smtp.handler.behaviour.data_replies = ["451 4.3.0 try again later"] * 2
    job = client.send_email("ada@example.com", "welcome", {"name": "Ada"}, **FAST_RETRY)

    job.wait(timeout=30)

    assert len(smtp.received) == 1
    assert [a.outcome for a in job.history()] == ["retrying", "retrying", "succeeded"]
    assert "SMTP 451" in (job.history()[0].error or "")


def test_550_fails_at_once(client: Client, smtp: SmtpServer, mail_worker: WorkerProcess) -> None:
    smtp.handler.behaviour.data_replies = ["550 5.7.1 message refused"]
    job = client.send_email("ada@example.com", "welcome", {"name": "Ada"}, **FAST_RETRY)

    with pytest.raises(JobFailed, match=r"SMTP 550 5\.7\.1 message refused"):
        job.wait(timeout=20)

    assert job.attempts == 1
    assert smtp.received == []


def test_refused_recipients_are_listed_and_all_refused_fails(
    client: Client, smtp: SmtpServer, mail_worker: WorkerProcess
) -> None:
    smtp.handler.behaviour.refused = {"gone@example.com": "550 5.1.1 no such user"}
    partly = client.send_email(["ada@example.com", "gone@example.com"], "welcome", {"name": "Ada"})
    assert partly.wait(timeout=20)["rejected"] == {"gone@example.com": "550 5.1.1 no such user"}

    refused = client.send_email("gone@example.com", "welcome", {"name": "Ada"})
    with pytest.raises(JobFailed, match="all recipients refused"):
        refused.wait(timeout=20)
    assert refused.attempts == 1
    assert len(smtp.received) == 1


def test_a_missing_template_variable_fails_the_job_with_its_name(
    client: Client, smtp: SmtpServer, mail_worker: WorkerProcess
) -> None:
    job = client.send_email("ada@example.com", "password_reset", {"name": "Ada"})

    with pytest.raises(JobFailed, match="'reset_url' is undefined"):
        job.wait(timeout=20)

    assert job.attempts == 1
    assert smtp.received == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"to": "ada@example.com\r\nBcc: all@example.com"}, "line breaks are not allowed"),
        ({"to": "not-an-address"}, "not a valid address"),
        ({"to": "ada@exa mple.com"}, "not a valid address"),
        ({"to": "ada@example.com", "subject": "Hi\nBcc: x@example.com"}, "line breaks are not allowed"),
        ({"to": [f"u{i}@example.com" for i in range(51)]}, "51 recipients, at most 50"),
        ({"to": "ada@example.com", "template": "nope"}, "unknown template 'nope'"),
        ({"to": "ada@example.com", "template": "../etc"}, "is not a template name"),
        ({"to": "ada@example.com", "context": ["x"]}, "context must be a JSON object"),
        ({"to": "ada@example.com", "attachments": ["9d1c1a0a-1111-4111-8111-111111111111"]}, "no artifact"),
    ],
)
def test_bad_input_is_rejected_at_enqueue_and_nothing_is_sent(
    client: Client, job_store: JobStore, settings: Settings, arguments: dict[str, object], message: str
) -> None:
    kwargs: dict[str, object] = {"template": "welcome", "context": {"name": "Ada"}, **arguments}
    with pytest.raises(ValueError, match=message):
        client.send_email(**kwargs)  # type: ignore[arg-type]
    assert [
        j for j in job_store.find(kind="email", limit=10_000) if j.queue == f"{settings.namespace}.email"
    ] == []


def test_a_worker_killed_right_after_the_server_accepted_does_not_send_twice(
    client: Client, job_store: JobStore, smtp: SmtpServer, mail_worker: WorkerProcess
) -> None:
    def kill_the_sender(message: object) -> None:
        job_id = message["X-Conveyor-Job"]  # type: ignore[index]
        os.kill(running_pid(job_store.db, job_id), signal.SIGKILL)

    smtp.handler.behaviour.after_accept = kill_the_sender
    job = client.send_email("ada@example.com", "welcome", {"name": "Ada"}, **FAST_RETRY)

    with pytest.raises(JobFailed, match="DeliveryUncertain"):
        job.wait(timeout=40)

    assert len(smtp.received) == 1
    assert [a.outcome for a in job.history()] == ["lost", "failed"]


def test_a_redelivered_message_of_a_sent_email_is_not_sent_again(
    client: Client, db: Database, settings: Settings, smtp: SmtpServer, mail_worker: WorkerProcess
) -> None:
    job = client.send_email("ada@example.com", "welcome", {"name": "Ada"})
    first = job.wait(timeout=20)
    # As if the worker died after recording the delivery but before the job's outcome and ack.
    with db.session() as session:
        session.execute(update(JobRow).where(JobRow.id == job.id).values(status="running"))
    broker = RabbitmqBroker(url=settings.broker_url, confirm_delivery=True)
    broker.enqueue(
        dramatiq.Message(
            queue_name=f"{settings.namespace}.email",
            actor_name="send_email",
            args=(),
            kwargs=job.info.payload,
            options={},
            message_id=job.id,
        )
    )
    broker.close()

    eventually(lambda: job.refresh().attempts == 2 and job.status is JobStatus.SUCCEEDED)
    assert job.result == first
    assert len(smtp.received) == 1


def test_starttls_with_auth_against_a_self_signed_certificate(
    client: Client, tmp_path: Path, start_worker: WorkerProcess.Factory
) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    password = secret("smtp auth", tail="@ w0rd")  # '@' and ' ' must travel percent-encoded
    server = SmtpServer(tls_context=server_context, credentials=("mailer", password)).start()
    worker = None
    try:
        encoded = quote(password, safe="")
        url = f"smtp://mailer:{encoded}@127.0.0.1:{server.port}?starttls=true&cafile={ca_file}"
        worker = start_worker("--processes", "1", "--threads", "1", env={"CONVEYOR_SMTP_URL": url})

        client.send_email("ada@example.com", "welcome", {"name": "Ada"}).wait(timeout=20)

        assert len(server.received) == 1
    finally:
        if worker is not None:
            worker.terminate()
        server.stop()


def test_one_connection_is_reused_across_jobs(
    client: Client, smtp: SmtpServer, start_worker: WorkerProcess.Factory
) -> None:
    start_worker("--processes", "1", "--threads", "1", env={"CONVEYOR_SMTP_URL": smtp.url})

    for i in range(5):
        client.send_email(f"user{i}@example.com", "welcome", {"name": str(i)}).wait(timeout=20)

    assert len(smtp.received) == 5
    assert smtp.handler.connections == 1


def test_the_rate_limit_holds_across_two_replicas(
    client: Client, smtp: SmtpServer, start_worker: WorkerProcess.Factory
) -> None:
    env = {"CONVEYOR_SMTP_URL": smtp.url, "CONVEYOR_EMAIL_RATE": "5/s"}
    start_worker("--processes", "1", "--threads", "4", env=env)
    start_worker("--processes", "1", "--threads", "4", env=env)

    jobs = [client.send_email(f"user{i}@example.com", "welcome", {"name": str(i)}) for i in range(10)]
    for job in jobs:
        job.wait(timeout=30)

    arrivals = sorted(r.at for r in smtp.received)
    assert len(arrivals) == 10
    assert len({a.pid for job in jobs for a in job.history()}) == 2  # both replicas sent
    # 5/s, smooth: 10 emails need at least 9 intervals of 200 ms.
    assert arrivals[-1] - arrivals[0] >= 1.6
    for start in arrivals:
        assert sum(start <= t < start + 1.0 for t in arrivals) <= 6


def test_with_redis_down_emails_are_still_sent(
    client: Client, smtp: SmtpServer, start_worker: WorkerProcess.Factory
) -> None:
    worker = start_worker(
        "--processes",
        "1",
        "--threads",
        "2",
        env={
            "CONVEYOR_SMTP_URL": smtp.url,
            "CONVEYOR_EMAIL_RATE": "5/s",
            "CONVEYOR_REDIS_URL": "redis://127.0.0.1:1/0",
        },
    )

    client.send_email("ada@example.com", "welcome", {"name": "Ada"}).wait(timeout=20)

    assert len(smtp.received) == 1
    assert worker.count("not enforced: Redis unreachable") == 1


def test_a_dead_email_requeued_from_the_dlq_succeeds_with_its_history_kept(
    client: Client, smtp: SmtpServer, mail_worker: WorkerProcess, service_env: dict[str, str]
) -> None:
    from tests.helpers import run_cli

    smtp.handler.behaviour.data_replies = ["550 5.7.1 mailbox full"]
    job = client.send_email("ada@example.com", "welcome", {"name": "Ada"})
    with pytest.raises(JobFailed, match="550"):
        job.wait(timeout=20)

    requeued = run_cli("dlq", "requeue", job.id, env=service_env)

    assert requeued.returncode == 0, requeued.stderr
    assert job.wait(timeout=20)["accepted"] == ["ada@example.com"]
    assert [a.outcome for a in job.history()] == ["failed", "succeeded"]
    assert len(smtp.received) == 1
