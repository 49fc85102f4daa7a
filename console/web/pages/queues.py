"""``/queues``: every queue's figures (as ``conveyor queues --json``), with pause and resume.

Pausing a queue makes every worker stop fetching from it within about a second; its messages
wait in RabbitMQ until it is resumed (``jobs/admin/pauses.py``, ``workers/pauses.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from console.web.actions import Action
from console.web.page import Page
from jobs.admin.operations import Operations
from jobs.errors import ServiceUnavailable


def load(request: Request, ops: Operations) -> Mapping[str, Any]:
    """The queues (the keys of ``conveyor queues --json``); ``error`` when a service is down."""
    try:
        rows = [row.to_dict() for row in ops.queues()]
    except ServiceUnavailable as exc:
        paused = ops.paused_queues()
        return {
            "namespace": ops.settings.namespace,
            "queues": [],
            "paused": sorted(paused),
            "error": str(exc),
        }
    return {
        "namespace": ops.settings.namespace,
        "queues": rows,
        "paused": sorted(row["queue"] for row in rows if row["paused"]),
        "error": None,
    }


def pause(request: Request, ops: Operations, form: Mapping[str, str]) -> Mapping[str, Any]:
    """``POST /api/queues/<queue>/pause``: workers stop fetching from the queue (audited)."""
    return ops.pause_queue(request.path_params["queue"]).to_dict()


def resume(request: Request, ops: Operations, form: Mapping[str, str]) -> Mapping[str, Any]:
    """``POST /api/queues/<queue>/resume``: workers fetch from the queue again (audited)."""
    return ops.resume_queue(request.path_params["queue"]).to_dict()


PAGES = [Page("/queues", "queues.html", load, title="Queues")]
ACTIONS = [
    Action("/api/queues/{queue}/pause", "pause", pause),
    Action("/api/queues/{queue}/resume", "resume", resume),
]
