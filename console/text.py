"""Making job data safe to show on an admin's terminal.

Payloads, errors, artifact names and worker names come from producers, from jobs and from foreign
messages: text nobody on the admin's side wrote. Two things must never happen when it is shown:
rich must not read it as markup (``[/x]`` would crash the command, ``[link=…]`` would forge
output), and its control characters (ESC sequences, bidi overrides, NUL…) must not reach the
terminal, where they could move the cursor, recolour or hide lines, or reorder what is read.
"""

from __future__ import annotations

import re
from typing import Any

from rich.markup import escape

# C0 and C1 controls, DEL, soft hyphen, bidi embeddings/overrides/isolates and marks, zero-width
# characters, line and paragraph separators, the BOM, interlinear annotations, lone surrogates.
_HIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufeff\ufff9-\ufffb\ud800-\udfff]"
)
_HIDDEN_BUT_NEWLINE = re.compile(_HIDDEN.pattern.replace("\x00-\x1f", "\x00-\x09\x0b-\x1f"))


def _shown(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: Any, *, newlines: bool = False) -> str:
    """``text`` (``str()`` of it) with every control or invisible formatting character written
    out as an escape (ESC → ``\\x1b``, RIGHT-TO-LEFT OVERRIDE → ``\\u202e``).

    ``newlines``: keep line feeds (a traceback's lines); otherwise they show as ``\\x0a``.
    """
    pattern = _HIDDEN_BUT_NEWLINE if newlines else _HIDDEN
    return pattern.sub(_shown, text if isinstance(text, str) else str(text))


def cell(text: Any) -> str:
    """``text`` ready for a rich table cell or markup string: control characters made visible,
    markup escaped (``None`` is an empty cell)."""
    return "" if text is None else escape(visible(text))
