"""Email building blocks that need no server: addresses, templates, messages, error classes."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from jobs.email.addresses import bare_address, normalise_addresses
from jobs.email.delivery import classify_smtp_error
from jobs.email.message import Attachment, Envelope, build_message, message_id_for
from jobs.email.templates import EmailTemplates, RenderedEmail
from jobs.email.transport import FileOutbox, SmtpConfig
from jobs.errors import PermanentError, SettingsError, TransientError
from jobs.kinds.email import validate
from jobs.settings import Settings
from templates import SHIPPED_DIR


def test_addresses_are_normalised_with_their_display_names() -> None:
    assert normalise_addresses("to", ["Ada Lovelace <Ada@Example.COM>", "bob@example.com"]) == [
        "Ada Lovelace <Ada@example.com>",
        "bob@example.com",
    ]
    assert bare_address("Ada <ada@example.com>") == "ada@example.com"


def test_a_custom_template_folder_wins_over_the_shipped_one(tmp_path: Path) -> None:
    folder = tmp_path / "email" / "welcome"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Hi {{ name }}")
    (folder / "body.txt").write_text("Custom body")

    rendered = EmailTemplates([tmp_path, SHIPPED_DIR]).render("welcome", {"name": "Ada"})

    assert rendered == RenderedEmail(subject="Hi Ada", text="Custom body", html=None)


def test_templates_run_in_a_sandbox(tmp_path: Path) -> None:
    folder = tmp_path / "email" / "evil"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    (folder / "body.txt").write_text("x")

    with pytest.raises(PermanentError, match="SecurityError"):
        EmailTemplates([tmp_path]).render("evil", {})


def test_a_subject_rendered_over_two_lines_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "email" / "multi"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Hello {{ name }}")
    (folder / "body.txt").write_text("x")

    with pytest.raises(PermanentError, match="one line"):
        EmailTemplates([tmp_path]).render("multi", {"name": "Ada\r\nBcc: everyone@example.com"})


def test_the_message_id_is_derived_from_the_job_id() -> None:
    assert message_id_for("1234", "Shop <orders@shop.example>") == "<1234@shop.example>"
    envelope = Envelope(
        sender="Shop <orders@shop.example>", to=["ada@example.com"], bcc=["audit@example.com"]
    )
    message = build_message(
        "1234", envelope, RenderedEmail("Hi", "text", None), [Attachment("a.txt", "text/plain", b"hello")]
    )
    assert message["Message-ID"] == "<1234@shop.example>"
    assert message["Bcc"] is None
    assert envelope.recipients == ["ada@example.com", "audit@example.com"]
    assert message.get_content_type() == "multipart/mixed"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (smtplib.SMTPDataError(451, b"later"), TransientError),
        (smtplib.SMTPDataError(552, b"too big"), PermanentError),
        (smtplib.SMTPSenderRefused(421, b"busy", "x@example.com"), TransientError),
        (smtplib.SMTPRecipientsRefused({"a@x": (450, b"greylisted")}), TransientError),
        (smtplib.SMTPRecipientsRefused({"a@x": (450, b"later"), "b@x": (550, b"no")}), PermanentError),
        (smtplib.SMTPServerDisconnected("gone"), TransientError),
        (TimeoutError("timed out"), TransientError),
        (ConnectionRefusedError(111, "refused"), TransientError),
    ],
)
def test_4xx_and_network_errors_are_retried_and_5xx_are_final(error: Exception, expected: type) -> None:
    assert type(classify_smtp_error(error)) is expected


def test_smtp_urls_carry_tls_auth_and_timeouts() -> None:
    config = SmtpConfig.from_url("smtp://mailer:p%40ss@mail.example:587?starttls=true&timeout=5&reuse=false")
    assert (config.host, config.port, config.starttls, config.implicit_tls) == (
        "mail.example",
        587,
        True,
        False,
    )
    assert (config.username, config.password, config.timeout, config.reuse) == ("mailer", "p@ss", 5.0, False)
    assert SmtpConfig.from_url("smtps://mail.example").port == 465
    with pytest.raises(SettingsError, match="unknown parameter"):
        Settings(smtp_url="smtp://mail.example?startls=true")


def test_the_file_outbox_writes_one_eml_per_job_atomically(tmp_path: Path) -> None:
    outbox = FileOutbox.from_url(f"file://{tmp_path}/out")
    message = build_message(
        "job-1", Envelope("a@example.com", ["b@example.com"]), RenderedEmail("S", "T", None), []
    )
    intents: list[str] = []

    outbox.send(
        message, "a@example.com", ["b@example.com"], lambda: intents.append("sending"), job_id="job-1"
    )

    assert [p.name for p in (tmp_path / "out").iterdir()] == ["job-1.eml"]
    assert b"Subject: S" in (tmp_path / "out" / "job-1.eml").read_bytes()
    assert intents == ["sending"]


def test_an_email_payload_is_checked_against_the_settings() -> None:
    settings = Settings(email_max_recipients=2)
    clean = validate({"to": "ada@example.com", "cc": ["b@example.com"], "template": "welcome"}, settings)
    assert clean == {"to": ["ada@example.com"], "cc": ["b@example.com"], "template": "welcome", "context": {}}
    with pytest.raises(ValueError, match="3 recipients, at most 2"):
        validate(
            {"to": ["a@example.com", "b@example.com"], "bcc": "c@example.com", "template": "welcome"},
            settings,
        )
    with pytest.raises(ValueError, match="'to' is required"):
        validate({"template": "welcome"}, settings)
