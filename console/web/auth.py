"""Who may act: the token, the login form's session cookie, and CSRF (SPEC section 9).

- No ``CONVEYOR_WEB_TOKEN``: the dashboard is read-only; every action answers 403.
- ``Authorization: Bearer <token>``: an API call; no session, no CSRF token needed.
- Otherwise the session cookie set by ``/login`` (signed with a key derived from the token, so
  changing the token signs everyone out) and, on every POST, the form's ``csrf`` field, equal
  to the session's.

No credentials: 401; wrong credentials, a missing or wrong CSRF token, or a read-only
dashboard: 403. Either way nothing changes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import Request

#: The session key holding the signed-in user's name.
USER = "user"
#: The session key holding the CSRF token of the forms.
CSRF = "csrf"
#: The form field carrying the CSRF token.
CSRF_FIELD = "csrf"
#: The user name of a bearer-token API call, in the audit log.
API_USER = "api"


class Refused(Exception):
    """A request that may not act; ``status`` is 401 or 403."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def session_secret(token: str) -> str:
    """The cookie-signing key: derived from the token, never the token itself."""
    return hmac.new(token.encode(), b"conveyor-web-session", hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer(request: Request) -> str | None:
    """The bearer token of the request, if it carries one."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def signed_in(request: Request) -> str | None:
    """The name of the session's user, or None."""
    if "session" not in request.scope:
        return None
    user = request.session.get(USER)
    return user if isinstance(user, str) else None


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use); empty when there are no sessions."""
    if "session" not in request.scope:
        return ""
    token = request.session.get(CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[CSRF] = token
    return token


@dataclass(frozen=True)
class Permit:
    """Who is acting, and how they proved it."""

    user: str
    via: str  # "bearer" or "session"


def authorize(request: Request, token: str | None, form: Mapping[str, str]) -> Permit:
    """Check that ``request`` may act.

    Raises:
        Refused: 401 without credentials, 403 with wrong ones, a bad CSRF token or no token set.
    """
    if token is None:
        raise Refused(403, "the dashboard is read-only: CONVEYOR_WEB_TOKEN is not set")
    given = bearer(request)
    if given is not None:
        if not _same(given, token):
            raise Refused(403, "wrong token")
        return Permit(API_USER, "bearer")
    user = signed_in(request)
    if user is None:
        raise Refused(401, "sign in, or send Authorization: Bearer <token>")
    expected = request.session.get(CSRF)
    if not isinstance(expected, str) or not _same(form.get(CSRF_FIELD, ""), expected):
        raise Refused(403, "missing or wrong CSRF token: reload the page and try again")
    return Permit(user, "session")


def check_login(token: str | None, given: str) -> bool:
    """Whether the login form's token is right (always False on a read-only dashboard)."""
    return token is not None and bool(given) and _same(given, token)
