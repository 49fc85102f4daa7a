"""MkDocs hook: a page naming a setting, a test or a ``conveyor`` command that does not exist
fails the strict build (one warning per stale reference, with the page and the line).

The checks are in :mod:`conveyor_docs.refcheck`; the changelog is history and is not checked.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conveyor_docs import refcheck  # noqa: E402 (the path above first)

log = logging.getLogger("mkdocs.hooks.conveyor_refcheck")

#: Pages that record history: what they name may be gone on purpose.
HISTORY = frozenset({"changelog.md"})


def on_page_markdown(markdown: str, /, *, page: Any, **_: Any) -> str:
    if page.file.src_uri in HISTORY:
        return markdown
    from cli import main

    # Line numbers of the file on disk: MkDocs has taken any front matter off ``markdown``.
    source = page.file.content_string
    offset = source[: source.index(markdown)].count("\n") if markdown and markdown in source else 0
    for problem in refcheck.check(markdown, ROOT, main):
        log.warning(
            "Doc file '%s' line %d: %s: %s",
            page.file.src_uri,
            problem.line + offset,
            problem.reference,
            problem.why_in_full,
        )
    return markdown
