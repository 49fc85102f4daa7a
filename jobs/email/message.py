"""Build the MIME message of an email job."""

from __future__ import annotations

from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.utils import formatdate

from jobs.email.addresses import domain_of
from jobs.email.templates import RenderedEmail

# 7-bit transfer encodings: any SMTP server relays them, 8BITMIME or not. Headers may run to
# RFC 5322's 998 characters: folding a long subject right after "Subject:" leaves a leading
# space that mail clients show.
SMTP_POLICY = policy.SMTP.clone(cte_type="7bit", max_line_length=998)


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


def message_id_for(job_id: str, sender: str) -> str:
    """The same job always gets the same Message-ID, so downstream duplicates are detectable."""
    return f"<{job_id}@{domain_of(sender)}>"


def build_message(
    job_id: str, envelope: Envelope, rendered: RenderedEmail, attachments: list[Attachment]
) -> EmailMessage:
    """``multipart/alternative`` (text, HTML), inside ``multipart/mixed`` when there are attachments."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = envelope.sender
    message["To"] = ", ".join(envelope.to)
    if envelope.cc:
        message["Cc"] = ", ".join(envelope.cc)
    if envelope.reply_to:
        message["Reply-To"] = ", ".join(envelope.reply_to)
    message["Subject"] = rendered.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id_for(job_id, envelope.sender)
    message["X-Conveyor-Job"] = job_id
    message.set_content(rendered.text)
    if rendered.html is not None:
        message.add_alternative(rendered.html, subtype="html")
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        message.add_attachment(
            attachment.data, maintype=maintype, subtype=subtype or "octet-stream", filename=attachment.name
        )
    return message
