"""``/login`` and ``/logout``: the session cookie of the forms (a token-holder's name for the audit log)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from console.web.auth import CSRF, CSRF_FIELD, USER, check_login, csrf_token
from console.web.page import state_of, templates

#: A user name for the audit log: letters, digits and ``.-_@``, at most 64 characters.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_@")


def _valid_name(name: str) -> bool:
    return 0 < len(name) <= 64 and set(name) <= _NAME_CHARS


def login_form(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {"page": None, "error": None})


async def login(request: Request) -> Response:
    form = await request.form()
    token = state_of(request).settings.web_token
    user, given = str(form.get("user", "")).strip(), str(form.get("token", ""))
    csrf_ok = "session" in request.scope and form.get(CSRF_FIELD) == request.session.get(CSRF)
    if not csrf_ok or not _valid_name(user) or not check_login(token, given):
        error = (
            "The dashboard is read-only: CONVEYOR_WEB_TOKEN is not set."
            if token is None
            else "Wrong name or token."
        )
        return templates.TemplateResponse(
            request, "login.html", {"page": None, "error": error}, status_code=403 if token is None else 401
        )
    request.session.clear()  # a new session: no fixation
    request.session[USER] = user
    csrf_token(request)
    return RedirectResponse("/", status_code=303)


async def logout(request: Request) -> Response:
    form = await request.form()
    if "session" in request.scope and form.get(CSRF_FIELD) == request.session.get(CSRF):
        request.session.clear()
    return RedirectResponse("/", status_code=303)


LOGIN_ROUTES = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
