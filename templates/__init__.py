"""Jinja2 templates shipped with Conveyor (email bodies, reports), installed with the package.

Lookup order: ``CONVEYOR_TEMPLATES_DIR`` first, then this folder, so that an
installation can override any shipped template by adding a file of the same name.
"""

from __future__ import annotations

from pathlib import Path

from jobs.settings import Settings

SHIPPED_DIR = Path(__file__).resolve().parent


def search_path(settings: Settings) -> list[Path]:
    """The folders searched for templates, in order."""
    folders = [SHIPPED_DIR]
    if settings.templates_dir:
        folders.insert(0, Path(settings.templates_dir).expanduser())
    return folders
