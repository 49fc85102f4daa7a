"""``/workers``: live replicas (as ``conveyor workers --json``) and the jobs running now."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from console.web.page import Page
from jobs.admin.operations import Operations

#: Running jobs listed at most.
RUNNING_SHOWN = 200


def load(request: Request, ops: Operations) -> Mapping[str, Any]:
    """``source``, ``note`` and ``replicas`` as the CLI gives them, plus ``running`` (PostgreSQL)."""
    view = ops.workers()
    running = [attempt.to_dict() for attempt in ops.running_jobs(RUNNING_SHOWN)]
    return {"namespace": ops.settings.namespace, **view.to_dict(), "running": running}


PAGES = [Page("/workers", "workers.html", load, title="Workers")]
