"""The dashboard's pages, in navigation order, and its actions."""

from __future__ import annotations

from console.web.actions import Action
from console.web.page import Page
from console.web.pages import overview, queues, schedule, workers

PAGES: list[Page] = [*overview.PAGES, *queues.PAGES, *workers.PAGES, *schedule.PAGES]
ACTIONS: list[Action] = [*queues.ACTIONS]
