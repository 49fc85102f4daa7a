"""The jobs page's query string: filters, the search box ``q`` and the keyset cursor ``before``.

``q`` is read as, in this order:

- a job id (a UUID): exactly that job;
- a JSON object (``{"to": "ada@example.com"}``): jobs whose payload contains it (``@>``);
- ``key=value`` (``template=welcome``, ``context.name=Ada``, ``sleep=0.5``): the same as
  ``{"key": value}``, a dotted key reaching into objects, the value read as JSON when it is
  (numbers, ``true``, ``null``) and as text otherwise; a scalar value also matches a list
  holding it (``to=ada@example.com`` finds an e-mail sent to Ada and others);
- ``error:TEXT``, or anything else: jobs whose error contains the text (case-insensitive).

Anything malformed raises :class:`~console.web.actions.BadRequest` (a 400), never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import click

from console.jobs import parse_moment
from console.web.actions import BadRequest
from jobs.ids import is_uuid
from jobs.settings import Settings
from jobs.status import JobStatus
from jobs.store.search import Cursor, JobQuery

#: The query parameters the jobs page understands; any other is refused (a typo would
#: otherwise silently show every job).
PARAMETERS = frozenset({"status", "kind", "queue", "since", "until", "q", "before"})
#: The longest search text or filter value taken.
MAX_TEXT = 500
_KEY = re.compile(r"^[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*$")
_NAME = re.compile(r"^[\w.:-]{1,255}$")


def encode_cursor(cursor: Cursor) -> str:
    """The ``before`` parameter of the page after the one ending at ``cursor``."""
    moment, ident = cursor
    text = f"{moment.astimezone(UTC).isoformat()}|{ident}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    """The position a ``before`` parameter names.

    Raises:
        BadRequest: not a cursor this page made.
    """
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        stamp, _, ident = raw.partition("|")
        moment = datetime.fromisoformat(stamp)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest(f"malformed cursor {text[:40]!r}: follow the page's Older link") from None
    if moment.tzinfo is None or not is_uuid(ident):
        raise BadRequest(f"malformed cursor {text[:40]!r}: follow the page's Older link")
    return moment, str(uuid.UUID(ident))


def payload_documents(text: str) -> tuple[dict[str, Any], ...] | None:
    """The JSON objects a payload search asks for (the payload contains any of them), or
    ``None`` when ``text`` is no payload search.

    Raises:
        BadRequest: ``text`` starts like a JSON object but is not one.
    """
    text = text.strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            raise BadRequest("the search starts with '{' but is not a JSON object") from None
        if not isinstance(document, dict):
            raise BadRequest("a payload search is a JSON object")
        return (document,)
    key, equals, value = text.partition("=")
    if not equals or not _KEY.match(key.strip()):
        return None
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        parsed = value.strip()
    leaves = [parsed] if isinstance(parsed, dict | list) else [parsed, [parsed]]
    return tuple(_nested(key.strip().split("."), leaf) for leaf in leaves)


def _nested(path: list[str], leaf: Any) -> dict[str, Any]:
    """``{"a": {"b": leaf}}`` for ``["a", "b"]``."""
    document: Any = leaf
    for part in reversed(path):
        document = {part: document}
    return dict(document)


def _search(text: str, query: dict[str, Any]) -> None:
    """Fill ``query``'s ``job_id``, ``payload`` or ``error`` from the search box."""
    text = text.strip()
    if not text:
        return
    if text.startswith("error:"):
        query["error"] = text.removeprefix("error:").strip() or None
    elif is_uuid(text):
        query["job_id"] = str(uuid.UUID(text))
    elif (documents := payload_documents(text)) is not None:
        query["payload"] = documents
    else:
        query["error"] = text


def _moment(text: str, name: str) -> datetime:
    try:
        moment = parse_moment(text, option=name)
    except click.BadParameter as exc:
        raise BadRequest(f"{name}: {exc.message}") from None
    assert moment is not None
    return moment


def parse_query(params: Mapping[str, str], settings: Settings) -> JobQuery:
    """The :class:`JobQuery` of the jobs page's query string (empty values are no filter).

    Raises:
        BadRequest: an unknown parameter, status, malformed name, time, search or cursor.
    """
    unknown = sorted(set(params) - PARAMETERS)
    if unknown:
        raise BadRequest(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(PARAMETERS))}")
    given = {k: v.strip() for k, v in params.items() if v.strip()}
    if any(len(v) > MAX_TEXT for v in given.values()):
        raise BadRequest(f"a parameter is longer than {MAX_TEXT} characters")
    query: dict[str, Any] = {}
    status = given.get("status")
    if status is not None and status not in {s.value for s in JobStatus}:
        raise BadRequest(f"unknown status {status!r}; known: {', '.join(s.value for s in JobStatus)}")
    query["status"] = status
    for name in ("kind", "queue"):
        if name in given and not _NAME.match(given[name]):
            raise BadRequest(f"malformed {name} {given[name][:40]!r}")
    query["kind"] = given.get("kind")
    queue = given.get("queue")
    query["queue"] = settings.queue_name(queue) if queue and "." not in queue else queue
    for name in ("since", "until"):
        query[name] = _moment(given[name], name) if name in given else None
    _search(given.get("q", ""), query)
    if "before" in given:
        query["before"] = decode_cursor(given["before"])
    return JobQuery(**query)
