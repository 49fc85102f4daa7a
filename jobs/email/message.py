"""Build the MIME message of an email job, straight to the bytes that go on the wire.

The common header (printable ASCII, one line) and body part (7-bit text) are written as they
are; anything else (non-ASCII names or subjects, long address lists, 8-bit text) goes through
the standard library's header folding or a C transfer encoding: building every message with
``email.message.EmailMessage`` and its header registry costs more CPU than everything else an
email job does.
"""

from __future__ import annotations

import binascii
import secrets
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from functools import cached_property
from typing import Any
from urllib.parse import quote

from jobs.email.addresses import bare_address, domain_of, wire_address
from jobs.email.templates import RenderedEmail

# 7-bit transfer encodings: any SMTP server relays them, 8BITMIME or not. Headers may run to
# RFC 5322's 998 characters: folding a long subject right after "Subject:" leaves a leading
# space that mail clients show.
SMTP_POLICY = policy.SMTP.clone(cte_type="7bit", max_line_length=998)
#: For a message that names an address with a non-ASCII local part (sent with SMTPUTF8).
SMTPUTF8_POLICY = SMTP_POLICY.clone(utf8=True)
CRLF = b"\r\n"
#: Characters: the longest line a 7bit body part may have (RFC 5322).
MAX_LINE = 998
_CONTENT_TYPE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$&^_.+-")


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Envelope:
    """Who sends and who receives (bcc included, which no header shows)."""

    sender: str
    to: list[str]
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    reply_to: list[str] = field(default_factory=list)

    @property
    def recipients(self) -> list[str]:
        return [*self.to, *self.cc, *self.bcc]


@dataclass(frozen=True)
class OutgoingMessage:
    """A built message: its bytes, and the SMTP envelope's addresses as they go on the wire."""

    message_id: str
    data: bytes
    sender: str
    recipients: list[str]
    #: Some address has a non-ASCII local part: only a server that offers SMTPUTF8 takes it.
    smtputf8: bool

    def as_bytes(self) -> bytes:
        return self.data

    @cached_property
    def parsed(self) -> EmailMessage:
        """The message read back (for inspection; sending never needs it)."""
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def __getitem__(self, name: str) -> Any:
        return self.parsed[name]

    def get_content_type(self) -> str:
        return self.parsed.get_content_type()


def message_id_for(job_id: str, sender: str) -> str:
    """The same job always gets the same Message-ID, so downstream duplicates are detectable."""
    return f"<{job_id}@{domain_of(sender)}>"


def build_message(
    job_id: str, envelope: Envelope, rendered: RenderedEmail, attachments: list[Attachment]
) -> OutgoingMessage:
    """``multipart/alternative`` (text, HTML), inside ``multipart/mixed`` when there are attachments.

    Raises:
        ValueError: an address whose domain cannot be IDNA-encoded.
    """
    sender, sender_utf8 = wire_address(bare_address(envelope.sender))
    recipients = [wire_address(bare_address(r)) for r in envelope.recipients]
    smtputf8 = sender_utf8 or any(utf8 for _, utf8 in recipients)
    smtputf8 = smtputf8 or any(wire_address(bare_address(r))[1] for r in envelope.reply_to)
    message_id = message_id_for(job_id, envelope.sender)
    head = [
        _address_header("From", [envelope.sender], smtputf8),
        _address_header("To", envelope.to, smtputf8),
        _address_header("Cc", envelope.cc, smtputf8) if envelope.cc else b"",
        _address_header("Reply-To", envelope.reply_to, smtputf8) if envelope.reply_to else b"",
        _header("Subject", rendered.subject, smtputf8),
        _header("Date", formatdate(usegmt=True), smtputf8),
        _header("Message-ID", message_id, smtputf8),
        _header("X-Conveyor-Job", job_id, smtputf8),
        b"MIME-Version: 1.0\r\n",
    ]
    body = _text_part(rendered.text, "plain")
    if rendered.html is not None:
        body = _multipart("alternative", [body, _text_part(rendered.html, "html")])
    if attachments:
        body = _multipart("mixed", [body, *(_attachment_part(a) for a in attachments)])
    return OutgoingMessage(
        message_id=message_id,
        data=b"".join(head) + body,
        sender=sender,
        recipients=[address for address, _ in recipients],
        smtputf8=smtputf8,
    )


def _is_plain(name: str, value: str) -> bool:
    """Written as is, the header reads back the same: printable ASCII on one line, no encoded word."""
    return value.isascii() and value.isprintable() and "=?" not in value and len(name) + len(value) < 996


def _header(name: str, value: str, utf8: bool) -> bytes:
    if _is_plain(name, value):
        return f"{name}: {value}\r\n".encode()
    chosen = SMTPUTF8_POLICY if utf8 else SMTP_POLICY
    return chosen.fold_binary(name, chosen.header_factory(name, value))


def _address_header(name: str, items: list[str], utf8: bool) -> bytes:
    """Addresses with their domains IDNA-encoded; display names as RFC 2047 encoded words."""
    value = ", ".join(items)
    if _is_plain(name, value):
        return f"{name}: {value}\r\n".encode()
    chosen = SMTPUTF8_POLICY if utf8 else SMTP_POLICY
    parsed = chosen.header_factory(name, value)
    addresses = []
    for address in parsed.addresses:
        local, _, domain = wire_address(address.addr_spec)[0].rpartition("@")
        addresses.append(Address(display_name=address.display_name, username=local, domain=domain))
    return chosen.fold_binary(name, chosen.header_factory(name, addresses))


def _text_part(text: str, subtype: str) -> bytes:
    """A text part as ``set_content`` makes it: UTF-8, CRLF line ends, 7bit when it can be."""
    lines = text.encode("utf-8").splitlines()
    data = CRLF.join(lines) + CRLF
    if data.isascii() and all(len(line) <= MAX_LINE for line in lines):
        encoding = "7bit"
    else:
        quoted = binascii.b2a_qp(data, istext=True)
        encoded = _base64(data)
        encoding, data = ("base64", encoded) if len(encoded) < len(quoted) else ("quoted-printable", quoted)
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n'
    ).encode() + data


def _attachment_part(attachment: Attachment) -> bytes:
    content_type = attachment.content_type.lower()
    maintype, _, subtype = content_type.partition("/")
    if not (maintype and subtype and set(maintype + subtype) <= _CONTENT_TYPE_CHARS):
        content_type = "application/octet-stream"
    name = attachment.name
    if _is_plain("", name) and '"' not in name and "\\" not in name:
        filename = f'filename="{name}"'
    else:
        filename = f"filename*=utf-8''{quote(name, safe='')}"
    head = (
        f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n"
        f"Content-Disposition: attachment; {filename}\r\n\r\n"
    )
    return head.encode() + _base64(attachment.data)


def _base64(data: bytes) -> bytes:
    """Base64 in lines of 76 characters, CRLF-terminated (57 bytes make 76 characters)."""
    return b"".join(binascii.b2a_base64(data[i : i + 57])[:-1] + CRLF for i in range(0, len(data), 57))


def _multipart(subtype: str, parts: list[bytes]) -> bytes:
    boundary = _boundary(parts)
    delimiter = f"--{boundary}\r\n".encode()
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode()
    return head + delimiter + (CRLF + delimiter).join(parts) + f"\r\n--{boundary}--\r\n".encode()


def _boundary(parts: list[bytes]) -> str:
    """A random boundary that no part contains (128 random bits: the loop all but never turns)."""
    while True:
        boundary = f"=_{secrets.token_hex(16)}"
        if not any(boundary.encode() in part for part in parts):
            return boundary
