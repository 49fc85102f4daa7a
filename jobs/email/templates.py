"""Email templates: Jinja2 in a sandbox, strict about missing variables, compiled once per process.

A template ``NAME`` is the folder ``email/NAME/`` holding ``subject.txt``, ``body.txt``
and optionally ``body.html`` (the only part that is HTML-escaped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    ChoiceLoader,
    FileSystemLoader,
    PrefixLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    UndefinedError,
)
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from jobs.errors import PermanentError

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")


def check_template_name(name: object) -> str:
    """A template name is a plain folder name: no paths, no surprises."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"email template: {name!r} is not a template name (lowercase letters, digits, _ and -)"
        )
    return name


def template_folder_index(folders: list[Path], name: str) -> int | None:
    """Which of ``folders`` holds the email template ``name`` (its subject and text body).

    A template once found is remembered for the process (a worker checks every email's), as
    Jinja2 keeps the compiled template (no auto-reload); a missing one is looked for each time.
    """
    key = (tuple(folders), name)
    found = _found.get(key)
    if found is not None:
        return found
    for index, folder in enumerate(folders):
        parts = folder / "email" / name
        if (parts / "subject.txt").is_file() and (parts / "body.txt").is_file():
            _found[key] = index
            return index
    return None


_found: dict[tuple[tuple[Path, ...], str], int] = {}


def known_templates(folders: list[Path]) -> list[str]:
    """Every email template name along ``folders``."""
    parts = (p.parent for f in folders for p in (f / "email").glob("*/subject.txt"))
    return sorted({folder.name for folder in parts if (folder / "body.txt").is_file()})


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str | None


class EmailTemplates:
    """Finds and renders email templates along a search path (first folder wins)."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        # A template's parts all come from the first folder that has the template ("3/email/x/…"),
        # while {% extends %} and {% include %} search every folder in order.
        loader = ChoiceLoader(
            [
                FileSystemLoader([str(folder) for folder in folders]),
                PrefixLoader({str(i): FileSystemLoader(str(folder)) for i, folder in enumerate(folders)}),
            ]
        )
        self.env = ImmutableSandboxedEnvironment(
            loader=loader,
            undefined=StrictUndefined,
            # Only body.html is HTML; the text parts must keep "<" and "&" as written.
            autoescape=lambda name: bool(name and name.endswith(".html")),
            auto_reload=False,
            keep_trailing_newline=False,
        )

    def exists(self, name: str) -> bool:
        return template_folder_index(self.folders, name) is not None

    def render(self, name: str, context: dict[str, Any]) -> RenderedEmail:
        """Render the three parts.

        Raises:
            PermanentError: an unknown template, a missing variable (named), a syntax or
                sandbox error, or a subject spanning several lines.
        """
        index = template_folder_index(self.folders, name)
        if index is None:
            raise PermanentError(f"unknown email template {name!r}")
        base = f"{index}/email/{name}"
        try:
            subject = self._render(f"{base}/subject.txt", context).strip()
            text = self._render(f"{base}/body.txt", context)
            html = self._render_optional(f"{base}/body.html", context)
        except TemplateNotFound:
            raise PermanentError(f"unknown email template {name!r}") from None
        except UndefinedError as exc:
            raise PermanentError(f"email template {name!r}: {exc.message}") from None
        except (SecurityError, TemplateError) as exc:
            raise PermanentError(f"email template {name!r}: {type(exc).__name__}: {exc}") from None
        check_subject(subject)
        return RenderedEmail(subject=subject, text=text, html=html)

    def _render(self, path: str, context: dict[str, Any]) -> str:
        return self.env.get_template(path).render(context)

    def _render_optional(self, path: str, context: dict[str, Any]) -> str | None:
        try:
            template = self.env.get_template(path)
        except TemplateNotFound:
            return None
        return template.render(context)


def check_subject(subject: str) -> None:
    if any(c in subject for c in "\r\n\0"):
        raise PermanentError(f"the subject must be one line, got {subject!r}")
    if not subject:
        raise PermanentError("the subject is empty")
