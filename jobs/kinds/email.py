"""The ``email`` kind: a templated email delivered over SMTP (or to a folder of ``.eml`` files)."""

from __future__ import annotations

import smtplib
from collections.abc import Mapping
from typing import Any

from jobs.context import current_job
from jobs.email.addresses import check_header_value, normalise_addresses
from jobs.email.delivery import Mailer, classify_smtp_error
from jobs.email.templates import check_template_name, known_templates, template_folder_index
from jobs.ids import is_uuid
from jobs.kinds.base import Payload, Result, require_keys
from jobs.services import Services
from jobs.settings import Settings
from templates import search_path

_FIELDS = {"to", "cc", "bcc", "reply_to", "template", "context", "subject", "attachments"}
#: Characters: RFC 5322's limit for a header line.
MAX_SUBJECT = 998


def validate(payload: Mapping[str, Any], settings: Settings) -> Payload:
    """``to`` (one address or a list), ``cc``, ``bcc``, ``reply_to``, ``template``, ``context``
    (a JSON object), ``subject`` (overrides the template's), ``attachments`` (artifact ids)."""
    require_keys("email", payload, _FIELDS)
    if "to" not in payload or not payload["to"]:
        raise ValueError("email payload: 'to' is required")
    clean: Payload = {"to": normalise_addresses("to", payload["to"])}
    for field in ("cc", "bcc", "reply_to"):
        if payload.get(field):
            clean[field] = normalise_addresses(field, payload[field])
    count = sum(len(clean.get(f, [])) for f in ("to", "cc", "bcc"))
    if count > settings.email_max_recipients:
        raise ValueError(
            f"email payload: {count} recipients, at most {settings.email_max_recipients} allowed"
        )
    if "template" not in payload:
        raise ValueError("email payload: 'template' is required")
    clean["template"] = _known_template(payload["template"], settings)
    context = payload.get("context", {})
    if not isinstance(context, dict):
        raise ValueError(f"email payload: context must be a JSON object, not {type(context).__name__}")
    clean["context"] = context
    if payload.get("subject") is not None:
        subject = payload["subject"]
        if not isinstance(subject, str) or not subject.strip() or len(subject) > MAX_SUBJECT:
            raise ValueError(f"email payload: subject must be a non-empty string of at most {MAX_SUBJECT}")
        clean["subject"] = check_header_value("subject", subject)
    attachments = payload.get("attachments") or []
    if not isinstance(attachments, list) or not all(isinstance(a, str) and is_uuid(a) for a in attachments):
        raise ValueError("email payload: attachments must be a list of artifact ids")
    if attachments:
        clean["attachments"] = attachments
    return clean


def _known_template(name: object, settings: Settings) -> str:
    template = check_template_name(name)
    folders = search_path(settings)
    if template_folder_index(folders, template) is None:
        known = ", ".join(known_templates(folders)) or "none"
        raise ValueError(f"email payload: unknown template {template!r}; known: {known}")
    return template


def artifact_ids(payload: Payload) -> list[str]:
    return list(payload.get("attachments", []))


def run(services: Services, **payload: Any) -> Result:
    """Send the email once; the result has ``message_id``, ``accepted`` and ``rejected``."""
    ctx = current_job()
    if ctx is None:
        raise RuntimeError("send_email runs inside a worker, as a job")
    mailer = services.resource("email.mailer", lambda: Mailer(services))
    try:
        return mailer.deliver(ctx.job_id, payload)
    except (smtplib.SMTPException, OSError) as exc:
        raise classify_smtp_error(exc) from exc
