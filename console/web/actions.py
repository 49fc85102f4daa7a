"""Actions: POST routes that change something, behind :func:`~console.web.auth.authorize`.

An action is one route under ``/api/``. Called with the bearer token it answers JSON; posted by
a page's form (a session cookie and the CSRF field) it redirects back to the form's ``next``
page with a flash message, so that the pages work without JavaScript.

An action that needs confirmation (cancel, purge, a group requeue) is called first without
``confirm=yes``: it then changes nothing and answers what it *would* do (a dry run), and the
page shows that with a button that posts again with ``confirm=yes``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from console.web.auth import Refused, authorize
from console.web.page import state_of
from jobs.admin.operations import Operations
from jobs.errors import ConveyorError, JobNotFound

#: What an action does: (request, admin facade acting as the user, form fields) → its answer.
Handler = Callable[[Request, Operations, Mapping[str, str]], Mapping[str, Any]]


class BadRequest(Exception):
    """Malformed input to an action or a page (400)."""


@dataclass(frozen=True)
class Action:
    """A POST route; ``name`` is what the audit log and the flash message call it."""

    path: str
    name: str
    handle: Handler


def confirmed(form: Mapping[str, str]) -> bool:
    """Whether the caller confirmed (``confirm=yes``); without it an action only counts."""
    return form.get("confirm", "") == "yes"


def _next_page(form: Mapping[str, str], request: Request) -> str:
    """Where a form goes back to: its ``next`` field when it is a local path, else the referrer's path."""
    target = form.get("next") or urlsplit(request.headers.get("referer", "/")).path or "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"  # never redirect off the dashboard
    return target


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "")
    return kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))


def _endpoint(action: Action) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        web = state_of(request)
        as_form = _is_form(request) and "authorization" not in request.headers
        try:
            permit = authorize(request, web.settings.web_token, form)
        except Refused as refused:
            return JSONResponse({"error": refused.reason}, status_code=refused.status)
        request.scope["conveyor_user"] = permit.user
        ops = web.operations(request)
        try:
            answer = await run_in_threadpool(action.handle, request, ops, form)
        except JobNotFound as exc:
            return _failed(as_form, request, form, 404, str(exc))
        except (BadRequest, ConveyorError) as exc:
            return _failed(as_form, request, form, 400, str(exc))
        finally:
            ops.close()
        if as_form:
            request.session["flash"] = answer.get("message") or f"{action.name}: done"
            return RedirectResponse(_next_page(form, request), status_code=303)
        return JSONResponse(dict(answer))

    return endpoint


def _failed(as_form: bool, request: Request, form: Mapping[str, str], status: int, reason: str) -> Response:
    if as_form:
        request.session["flash"] = reason
        return RedirectResponse(_next_page(form, request), status_code=303)
    return JSONResponse({"error": reason}, status_code=status)


def action_routes(actions: list[Action]) -> list[Route]:
    return [Route(a.path, _endpoint(a), methods=["POST"]) for a in actions]
