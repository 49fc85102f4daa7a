"""The dashboard's pages, in navigation order, and its actions."""

from __future__ import annotations

from console.web.actions import Action
from console.web.page import Page
from console.web.pages import overview

PAGES: list[Page] = [*overview.PAGES]
ACTIONS: list[Action] = []
