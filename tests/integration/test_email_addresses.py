"""Internationalised addresses are sent correctly, and one failed send never breaks the next
on the same reused SMTP connection (real aiosmtpd servers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobs.email.message import Envelope, build_message
from jobs.email.templates import RenderedEmail
from jobs.email.transport import SmtpConfig, SmtpTransport
from jobs.errors import JobFailed
from producers import Client
from tests.helpers import WorkerProcess
from tests.smtp import SmtpServer

pytestmark = pytest.mark.integration


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def utf8_smtp() -> Iterator[SmtpServer]:
    server = SmtpServer(smtputf8=True).start()
    yield server
    server.stop()


def one_thread_worker(start_worker: WorkerProcess.Factory, server: SmtpServer) -> WorkerProcess:
    """One thread: every email goes over the same reused connection."""
    return start_worker("--processes", "1", "--threads", "1", env={"CONVEYOR_SMTP_URL": server.url})


def test_a_non_ascii_domain_is_sent_idna_encoded_and_the_next_email_still_goes(
    client: Client, smtp: SmtpServer, start_worker: WorkerProcess.Factory
) -> None:
    one_thread_worker(start_worker, smtp)

    first = client.send_email("Jörg <user@münchen.de>", "welcome", {"name": "Jörg"})
    assert first.wait(timeout=20)["accepted"] == ["user@xn--mnchen-3ya.de"]
    client.send_email("ada@example.com", "welcome", {"name": "Ada"}).wait(timeout=20)

    assert [r.recipients for r in smtp.received] == [["user@xn--mnchen-3ya.de"], ["ada@example.com"]]
    to = smtp.received[0].message["To"]
    assert to.addresses[0].display_name == "Jörg"
    assert to.addresses[0].addr_spec == "user@xn--mnchen-3ya.de"
    assert smtp.handler.connections == 1


def test_a_non_ascii_local_part_fails_alone_without_smtputf8_and_the_next_email_still_goes(
    client: Client, smtp: SmtpServer, start_worker: WorkerProcess.Factory
) -> None:
    one_thread_worker(start_worker, smtp)

    refused = client.send_email("jörg@example.com", "welcome", {"name": "Jörg"})
    with pytest.raises(JobFailed, match="SMTPUTF8"):
        refused.wait(timeout=20)
    assert refused.attempts == 1
    client.send_email("ada@example.com", "welcome", {"name": "Ada"}).wait(timeout=20)

    assert [r.recipients for r in smtp.received] == [["ada@example.com"]]


def test_a_non_ascii_local_part_is_sent_with_smtputf8_when_the_server_offers_it(
    client: Client, utf8_smtp: SmtpServer, start_worker: WorkerProcess.Factory
) -> None:
    one_thread_worker(start_worker, utf8_smtp)

    result = client.send_email("Jörg <jörg@münchen.de>", "welcome", {"name": "Jörg"}).wait(timeout=20)
    client.send_email("ada@example.com", "welcome", {"name": "Ada"}).wait(timeout=20)

    assert result["accepted"] == ["jörg@xn--mnchen-3ya.de"]
    assert [r.recipients for r in utf8_smtp.received] == [["jörg@xn--mnchen-3ya.de"], ["ada@example.com"]]
    to = utf8_smtp.received[0].message["To"]
    assert (to.addresses[0].display_name, to.addresses[0].addr_spec) == ("Jörg", "jörg@xn--mnchen-3ya.de")
    assert "Hello Jörg," in utf8_smtp.received[0].message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_an_error_between_rcpt_and_data_leaves_the_pooled_connection_usable(smtp: SmtpServer) -> None:
    transport = SmtpTransport(SmtpConfig.from_url(smtp.url))
    envelope = Envelope(sender="noreply@example.com", to=["ada@example.com"])
    message = build_message("job-1", envelope, RenderedEmail("Hi", "Hello", None), [])

    def store_is_down() -> None:
        raise RuntimeError("the delivery intent could not be recorded")

    try:
        with pytest.raises(RuntimeError, match="intent"):
            transport.send(message, "noreply@example.com", ["ada@example.com"], store_is_down)
        transport.send(message, "noreply@example.com", ["bob@example.com"], lambda: None)
    finally:
        transport.close()

    assert [r.recipients for r in smtp.received] == [["bob@example.com"]]
