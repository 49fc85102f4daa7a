"""The dashboard's pages, in navigation order, its actions, and other routes (downloads)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from console.web.actions import Action
from console.web.page import Page
from console.web.pages import artifacts, dead, jobs, overview, queues, schedule, workers

PAGES: list[Page] = [
    *overview.PAGES,
    *queues.PAGES,
    *jobs.PAGES,
    *dead.PAGES,
    *workers.PAGES,
    *schedule.PAGES,
]
ACTIONS: list[Action] = [*queues.ACTIONS, *jobs.ACTIONS, *dead.ACTIONS]
ROUTES: list[BaseRoute] = [*artifacts.ROUTES]
