"""``/``: the overview."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from console.web.page import Page
from jobs.admin.operations import Operations


def load(request: Request, ops: Operations) -> Mapping[str, Any]:
    return {"namespace": ops.settings.namespace}


PAGES = [Page("/", "overview.html", load, title="Overview")]
