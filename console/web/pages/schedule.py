"""``/schedule``: the schedule's entries, next runs and last ticks, and the leading scheduler.

With ``conveyor web --schedule FILE`` the entries are those of ``conveyor schedule list --json``
(same keys); without it, the page lists the ticks stored for the namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from console.web.page import Page, state_of
from jobs.admin.operations import Operations
from jobs.schedule.cron import utc_iso

#: Next runs shown per entry.
NEXT_RUNS = 3


def load(request: Request, ops: Operations) -> Mapping[str, Any]:
    """``schedule`` (the file, or None), ``namespace``, ``leader``, ``entries`` and ``ticks``."""
    plan = state_of(request).schedule
    ticks, leader = ops.schedule_ticks()
    entries: list[dict[str, Any]] = []
    if plan is not None:
        statuses, leader = ops.schedule_status(plan, NEXT_RUNS)
        entries = [status.to_dict() for status in statuses]
    return {
        "schedule": plan.source if plan is not None else None,
        "namespace": ops.settings.namespace,
        "leader": leader,
        "entries": entries,
        "ticks": [{"name": name, "last_tick": utc_iso(tick)} for name, tick in sorted(ticks.items())],
    }


PAGES = [Page("/schedule", "schedule.html", load, title="Schedule")]
