"""What pages, actions and the login share: the page type, the request's state, the templates."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.templating import Jinja2Templates

from jobs.admin.audit import Actor
from jobs.admin.operations import Operations
from jobs.schedule.spec import Schedule
from jobs.settings import Settings
from jobs.store import Database
from producers import Client

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

#: What a page's loader gets: the request (query and path parameters) and the admin facade.
Loader = Callable[[Request, Operations], Mapping[str, Any]]


@dataclass(frozen=True)
class Page:
    """One read-only view, served as HTML at ``path`` and as JSON at ``/api`` + ``path``."""

    path: str
    template: str
    load: Loader
    #: The navigation entry's label (None: not in the navigation, e.g. a job's detail).
    title: str | None = None

    @property
    def api_path(self) -> str:
        """``/api/queues`` for ``/queues``; ``/api/overview`` for ``/``."""
        return "/api" + (self.path.rstrip("/") or "/overview")


@dataclass
class WebState:
    """What every request shares: the settings, one database pool and one producers' client."""

    settings: Settings
    database: Database
    #: The schedule file ``conveyor web --schedule`` loaded (None: the schedule page shows ticks only).
    schedule: Schedule | None = None
    _client: Client | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def client(self) -> Client:
        """The producers' client retries and cancels go through, made on first use (a read-only
        dashboard never opens a RabbitMQ connection for it). Thread-safe."""
        with self._lock:
            if self._client is None:
                self._client = Client(self.settings, db=self.database)
            return self._client

    def close(self) -> None:
        """Close the client, if one was made (the database is the caller's)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def operations(self, request: Request) -> Operations:
        """The admin facade acting as this request's user (``web`` in the audit log)."""
        user = request.scope.get("conveyor_user") or "anonymous"
        host = request.client.host if request.client else "unknown"
        return Operations(self.settings, self.database, Actor.web(user, host))


def state_of(request: Request) -> WebState:
    web: WebState = request.app.state.web
    return web


def not_found(request: Request, message: str) -> Response:
    """404 for a page (HTML) or its ``/api/`` twin (JSON)."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=404)
    return templates.TemplateResponse(
        request, "error.html", {"page": None, "message": message}, status_code=404
    )


def bad_request(request: Request, message: str) -> Response:
    """400 for a malformed id or filter, as HTML or JSON."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=400)
    return templates.TemplateResponse(
        request, "error.html", {"page": None, "message": message}, status_code=400
    )


def take_flash(request: Request) -> str | None:
    """The message an action left for the next page (shown once)."""
    if "session" not in request.scope:
        return None
    message = request.session.pop("flash", None)
    return message if isinstance(message, str) else None
