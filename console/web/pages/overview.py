"""``/``: the overview — throughput, failures and latency of the last hour or day, and live counters.

``?range=1h`` (default) or ``24h``. The counters are also a fragment of their own,
``/overview/counters`` (``/api/overview/counters``), which the page reloads every few seconds
with htmx; without JavaScript the page shows them as sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from console.web.actions import BadRequest
from console.web.page import Page
from jobs.admin.operations import Operations

#: Seconds between two reloads of the live counters.
REFRESH_SECONDS = 5


def load_counters(request: Request, ops: Operations) -> Mapping[str, Any]:
    """Jobs queued, running, failed in the last hour; dead letters; workers up."""
    return {"namespace": ops.settings.namespace, "refresh_seconds": REFRESH_SECONDS, **ops.counters()}


def load(request: Request, ops: Operations) -> Mapping[str, Any]:
    """The charts of the requested range, and the counters."""
    try:
        charts = ops.overview(request.query_params.get("range", "1h"))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return {
        "namespace": ops.settings.namespace,
        **charts,
        "counters": load_counters(request, ops),
    }


PAGES = [
    Page("/", "overview.html", load, title="Overview"),
    Page("/overview/counters", "counters.html", load_counters),
]
