"""``/dead``: dead letters grouped by error fingerprint, with a requeue and a purge per group.

The page reads the job rows (``source=rows``, the default): the worker marks a job's row with its
error fingerprint when it dead-letters it, so the groups are one indexed read, and RabbitMQ is
only asked how many messages its dead-letter queues hold; a difference is shown, with a link to
``source=queues``, which reads every message itself as ``conveyor dlq list`` does (and shows the
messages without a job row). See :mod:`jobs.admin.dead_groups`.

A group is its fingerprint, not the list a page showed: the dry run counts the group's members
at that moment, and the confirmed action acts on the members present when it runs: a message
of the same fingerprint dead-lettered since the dry run is included, one already requeued or
purged by someone else is not. The answer says how many it handled.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from console.web.actions import Action, BadRequest, confirmed
from console.web.page import Page
from jobs.admin.dead_groups import DeadView, group_dead
from jobs.admin.dlq import dead_letter_queues
from jobs.admin.operations import Operations
from jobs.logs import mask_document

#: The query parameters of ``/dead``: ``queue`` filters; ``source`` picks the job rows or the
#: queues themselves; ``confirm`` and ``group`` show a confirmation after a dry run.
PARAMETERS = frozenset({"queue", "source", "confirm", "group"})
#: Where the page reads the dead letters from: the job rows (RabbitMQ counted), or every message.
SOURCES = ("rows", "queues")
#: Dead letters listed one by one on the page (the groups count them all; ``conveyor dlq list
#: --json`` lists every one): a page of thousands of rows helps nobody and costs most of its time.
LETTERS_SHOWN = 200
_KEY = re.compile(r"^[0-9a-f]{16}$")


def _queue(ops: Operations, value: str | None) -> str | None:
    """The ``queue`` filter, checked (``email``, ``conveyor.email`` or its XQ), or None.

    Raises:
        BadRequest: no job kind uses that queue.
    """
    value = (value or "").strip()[:256]
    if value:
        try:
            dead_letter_queues(ops.settings, value)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    return value or None


def load_dead(request: Request, ops: Operations) -> Mapping[str, Any]:
    """``groups`` (by fingerprint, largest first), at most :data:`LETTERS_SHOWN` ``letters`` (as
    ``conveyor dlq list --json``; the newest from the rows, the first from the queues),
    ``letters_total``, ``in_queues`` (RabbitMQ's count, null when it cannot be reached) and ``source``."""
    unknown = sorted(set(request.query_params) - PARAMETERS)
    if unknown:
        raise BadRequest(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(PARAMETERS))}")
    queue = _queue(ops, request.query_params.get("queue"))
    source = request.query_params.get("source") or SOURCES[0]
    if source not in SOURCES:
        raise BadRequest(f"unknown source {source[:40]!r}; known: {', '.join(SOURCES)}")
    view = _read(ops, queue) if source == "queues" else ops.dead_view(queue, shown=LETTERS_SHOWN)
    document: dict[str, Any] = mask_document(
        {
            "groups": [group.to_dict() for group in view.groups],
            "letters": [letter.to_dict() for letter in view.letters],
            "letters_total": view.letters_total,
            "in_queues": view.in_queues,
            "source": view.source,
            "unavailable": view.unavailable,
        }
    )
    return document


def _read(ops: Operations, queue: str | None) -> DeadView:
    """Every message of the dead-letter queues, read from RabbitMQ and grouped."""
    letters = ops.dead_letters(queue)
    return DeadView(group_dead(letters), letters[:LETTERS_SHOWN], len(letters), len(letters), "queues")


def _key(request: Request) -> str:
    key = str(request.path_params["key"])
    if not _KEY.match(key):
        raise BadRequest(f"malformed fingerprint {key[:40]!r}: 16 hex digits, as /api/dead lists them")
    return key


def _members(ops: Operations, key: str, queue: str | None) -> int:
    return sum(letter.key == key for letter in ops.dead_letters(queue))


def _group_action(verb: str, audit_name: str) -> Action:
    """Requeue or purge one fingerprint's dead letters; a dry run (a count) without ``confirm=yes``."""

    def handle(request: Request, ops: Operations, form: Mapping[str, str]) -> Mapping[str, Any]:
        key, queue = _key(request), _queue(ops, form.get("queue"))
        if not confirmed(form):
            count = _members(ops, key, queue)
            message = (
                f"{verb.capitalize()} {count} dead letter(s) of this group? Confirm to go ahead."
                if count
                else "no dead letter has this fingerprint now: nothing to do"
            )
            return {"dry_run": True, "count": count, "fingerprint": key, "message": message}
        act = ops.requeue_dead_group if verb == "requeue" else ops.purge_dead_group
        with ops.audit(audit_name, selection={"fingerprint": key, "queue": queue}) as record:
            outcome = act(key, queue=queue)
            record.count = outcome.count
            record.job_ids = list(outcome.done)
            if outcome.skipped:
                record.details["skipped"] = len(outcome.skipped)
        past = "requeued" if verb == "requeue" else "purged"
        message = f"{past} {outcome.count} dead letter(s)" + (
            f", skipped {len(outcome.skipped)}" if outcome.skipped else ""
        )
        return {**mask_document(outcome.to_dict()), "dry_run": False, "fingerprint": key, "message": message}

    return Action(f"/api/dead/{{key}}/{verb}", verb, handle)


PAGES = [Page("/dead", "dead.html", load_dead, title="Dead letters")]
ACTIONS = [_group_action("requeue", "dlq.requeue"), _group_action("purge", "dlq.purge")]
