"""The Starlette application: pages (HTML and ``/api/`` JSON from one loader), actions, login, assets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from console.web.actions import BadRequest, action_routes
from console.web.auth import csrf_token, session_secret, signed_in
from console.web.formats import FILTERS
from console.web.login import LOGIN_ROUTES
from console.web.page import HERE, Page, WebState, bad_request, not_found, state_of, take_flash, templates
from console.web.pages import ACTIONS, PAGES, ROUTES
from jobs.errors import JobNotFound
from jobs.schedule.spec import Schedule
from jobs.settings import Settings
from jobs.store import Database


def _endpoint(
    page: Page, answer: Callable[[Request, Page, Mapping[str, Any]], Response]
) -> Callable[[Request], Response]:
    """The page's data, given to ``answer`` (HTML or JSON); 404 and 400 the same for both."""

    def endpoint(request: Request) -> Response:
        ops = state_of(request).operations(request)
        try:
            data = page.load(request, ops)
        except JobNotFound as exc:
            return not_found(request, str(exc))
        except BadRequest as exc:
            return bad_request(request, str(exc))
        finally:
            ops.close()
        return answer(request, page, data)

    return endpoint


def _html(request: Request, page: Page, data: Mapping[str, Any]) -> Response:
    return templates.TemplateResponse(request, page.template, {"data": data, "page": page})


def _json(request: Request, page: Page, data: Mapping[str, Any]) -> Response:
    return JSONResponse(data)


def page_routes(pages: list[Page]) -> list[BaseRoute]:
    """Each page twice: its HTML and its ``/api/`` JSON (sync endpoints: Starlette runs them in
    its thread pool, as the store is synchronous)."""
    routes: list[BaseRoute] = []
    for page in pages:
        routes.append(Route(page.path, _endpoint(page, _html), methods=["GET"]))
        routes.append(Route(page.api_path, _endpoint(page, _json), methods=["GET"]))
    return routes


def _sessions(token: str | None) -> list[Middleware]:
    if token is None:  # read-only: no sessions at all
        return []
    return [
        Middleware(
            SessionMiddleware,
            secret_key=session_secret(token),
            session_cookie="conveyor_session",
            same_site="strict",
            https_only=False,  # behind TLS, the proxy's cookie policy applies
        )
    ]


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    """Close what the requests opened (the producers' client) when the server stops."""
    try:
        yield
    finally:
        state: WebState = app.state.web
        state.close()


def create_app(settings: Settings, database: Database, *, schedule: Schedule | None = None) -> Starlette:
    """The dashboard of ``settings``' namespace on ``database`` (which the caller disposes of);
    ``schedule``: the schedule file's plan, for the next runs on ``/schedule``."""
    routes = [
        *page_routes(PAGES),
        *action_routes(ACTIONS),
        *ROUTES,
        *LOGIN_ROUTES,
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, middleware=_sessions(settings.web_token), lifespan=_lifespan)
    app.state.web = WebState(settings, database, schedule)
    templates.env.filters.update(FILTERS)
    templates.env.globals.update(
        navigation=[p for p in PAGES if p.title],
        csrf_token=csrf_token,
        signed_in=signed_in,
        take_flash=take_flash,
        read_only=lambda request: state_of(request).settings.web_token is None,
    )
    return app
