"""The MIME builder writes bytes itself: a mail reader must read them as it reads what
``email.message.EmailMessage`` makes of the same email (the reference below)."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest

from jobs.email.addresses import bare_address, normalise_addresses
from jobs.email.message import SMTP_POLICY, Attachment, Envelope, build_message, message_id_for
from jobs.email.templates import RenderedEmail


def reference(
    job_id: str, envelope: Envelope, rendered: RenderedEmail, attachments: list[Attachment]
) -> bytes:
    """The message as the standard library builds it."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = envelope.sender
    message["To"] = ", ".join(envelope.to)
    if envelope.cc:
        message["Cc"] = ", ".join(envelope.cc)
    if envelope.reply_to:
        message["Reply-To"] = ", ".join(envelope.reply_to)
    message["Subject"] = rendered.subject
    message["Message-ID"] = message_id_for(job_id, envelope.sender)
    message["X-Conveyor-Job"] = job_id
    message.set_content(rendered.text)
    if rendered.html is not None:
        message.add_alternative(rendered.html, subtype="html")
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        message.add_attachment(attachment.data, maintype=maintype, subtype=subtype, filename=attachment.name)
    return message.as_bytes()


def read(data: bytes) -> dict[str, Any]:
    """What a reader sees: the headers, and each leaf part's type, file name and content."""
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    names = ["From", "To", "Cc", "Reply-To", "Subject", "Message-ID", "X-Conveyor-Job", "MIME-Version"]
    parts = [
        (part.get_content_type(), part.get_filename(), part.get_content())
        for part in message.walk()
        if not part.is_multipart()
    ]
    return {
        "headers": {name: str(message[name]) if message[name] is not None else None for name in names},
        "structure": [part.get_content_type() for part in message.walk()],
        "parts": parts,
    }


LONG_LINE = "x" * 1200
CASES: dict[str, tuple[dict[str, Any], RenderedEmail, list[Attachment]]] = {
    "plain text only": ({}, RenderedEmail("Hi", "Hello\nworld", None), []),
    "text and html": ({}, RenderedEmail("Hi", "Hello <&>", "<p>Hello &amp;</p>\n"), []),
    "attachments": (
        {},
        RenderedEmail("Hi", "Hello", "<p>Hello</p>"),
        [
            Attachment("report.bin", "application/octet-stream", bytes(range(256)) * 3),
            Attachment("é t.txt", "text/plain", b""),
        ],
    ),
    "text only with an attachment": (
        {},
        RenderedEmail("Hi", "Hello", None),
        [Attachment("a.txt", "text/plain", b"hello")],
    ),
    "non-ASCII subject and text": (
        {},
        RenderedEmail("Grüße, Jörg — 東京", "Grüße\nJörg 東京\n", "<p>東京</p>"),
        [],
    ),
    "mostly non-ASCII text": ({}, RenderedEmail("Hi", "東京都" * 200, None), []),
    "odd line ends and spaces": ({}, RenderedEmail("Hi", "a \r\nb\rc\n\n.\nFrom me\n\t\n", None), []),
    "a line over 998 characters": ({}, RenderedEmail("Hi", f"start\n{LONG_LINE}\nend", None), []),
    "a long ASCII subject": ({}, RenderedEmail("word " * 190, "x", None), []),
    "a subject that looks encoded": ({}, RenderedEmail("=?utf-8?q?hi?= there", "x", None), []),
    "names and many recipients": (
        {
            "to": normalise_addresses(
                "to", ["Jörg Müller <jm@example.com>", "Ada Lovelace <ada@example.com>"]
            ),
            "cc": normalise_addresses("cc", [f"User {i} <user{i}@example.com>" for i in range(40)]),
            "reply_to": normalise_addresses("reply_to", ['"Support, Team" <help@example.com>']),
        },
        RenderedEmail("Hi", "x", None),
        [],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_built_message_reads_as_the_standard_librarys(case: str) -> None:
    fields, rendered, attachments = CASES[case]
    envelope = Envelope(
        sender="Conveyor <noreply@example.com>",
        to=fields.get("to", ["ada@example.com"]),
        cc=fields.get("cc", []),
        bcc=["audit@example.com"],
        reply_to=fields.get("reply_to", []),
    )

    built = build_message("job-1", envelope, rendered, attachments)

    assert read(built.data) == read(reference("job-1", envelope, rendered, attachments))
    assert built.data.isascii()
    assert max(len(line) for line in built.data.split(b"\r\n")) <= 998
    assert b"\n" not in built.data.replace(b"\r\n", b"")
    assert built.recipients == [bare_address(r) for r in envelope.recipients]
    assert "audit@example.com" in built.recipients
    assert built.sender == "noreply@example.com"
    assert not built.smtputf8


def test_non_ascii_domains_are_idna_encoded_and_local_parts_ask_for_smtputf8() -> None:
    envelope = Envelope(
        sender="noreply@example.com", to=normalise_addresses("to", ["Jörg <jörg@münchen.de>"])
    )

    built = build_message("job-1", envelope, RenderedEmail("Hi", "x", None), [])

    assert built.recipients == ["jörg@xn--mnchen-3ya.de"]
    assert built.smtputf8
    assert "To: Jörg <jörg@xn--mnchen-3ya.de>\r\n".encode() in built.data
    ascii_only = build_message(
        "job-2", Envelope("noreply@example.com", ["user@münchen.de"]), RenderedEmail("Hi", "x", None), []
    )
    assert (ascii_only.recipients, ascii_only.smtputf8) == (["user@xn--mnchen-3ya.de"], False)
    assert b"To: user@xn--mnchen-3ya.de\r\n" in ascii_only.data
