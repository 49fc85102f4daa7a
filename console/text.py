"""Making job data safe to show on an admin's terminal.

Payloads, errors, artifact names and worker names come from producers, from jobs and from foreign
messages: text nobody on the admin's side wrote. Two things must never happen when it is shown:
rich must not read it as markup (``[/x]`` would crash the command, ``[link=…]`` would forge
output), and its control characters (ESC sequences, bidi overrides, NUL…) must not reach the
terminal, where they could move the cursor, recolour or hide lines, or reorder what is read.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from jobs.logs import visible

__all__ = ["cell", "visible"]


def cell(text: Any) -> str:
    """``text`` ready for a rich table cell or markup string: control characters made visible,
    markup escaped (``None`` is an empty cell)."""
    return "" if text is None else escape(visible(text))
