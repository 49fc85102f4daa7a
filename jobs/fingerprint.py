"""Error fingerprints: which dead letters died of "the same" error.

A fingerprint is (kind, exception type, normalised message). Normalising replaces what varies
from one job to the next by placeholders, so that a thousand ``SMTPRecipientsRefused`` errors
for a thousand addresses make one group:

- quoted strings (``'…'``, ``"…"``) → ``<str>``
- URLs (``scheme://…``) → ``<url>``; e-mail addresses → ``<email>``; IPv4 addresses, with an
  optional port → ``<ip>``
- UUIDs → ``<id>``; ``0x…`` and runs of 8 or more hex digits holding a digit → ``<hex>``
- numbers (integers and decimals) → ``<n>``
- runs of white space → one space; the message is cut at :data:`MESSAGE_WIDTH` characters.

The order matters: a quoted address is one ``<str>``, a UUID is not read as numbers. These are
pure functions, so that the dashboard and its tests agree on every group.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

#: Characters of a normalised message kept in a fingerprint.
MESSAGE_WIDTH = 200
#: The exception type of an error whose text names none (``"timed out"``), and of foreign messages.
NO_TYPE = "-"

_TYPE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s*(.*))?$", re.DOTALL)
_REPLACEMENTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""), "<str>"),
    (re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://\S+"), "<url>"),
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    (
        re.compile(r"\b[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\b"),
        "<id>",
    ),
    (re.compile(r"\b0[xX][0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b"), "<hex>"),
    (re.compile(r"(?<![\w<])[-+]?\d+(?:\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)


@dataclass(frozen=True)
class Fingerprint:
    """What dead letters of one group share."""

    kind: str
    error_type: str
    message: str

    @property
    def key(self) -> str:
        """A short stable digest, for URLs and forms (16 hex digits)."""
        text = "\0".join((self.kind, self.error_type, self.message))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def normalise(message: str) -> str:
    """``message`` with its varying parts replaced by placeholders (see the module's docstring)."""
    for pattern, placeholder in _REPLACEMENTS:
        message = pattern.sub(placeholder, message)
    return message.strip()[:MESSAGE_WIDTH]


def split_error(error: str | None) -> tuple[str, str]:
    """``("SMTPDataError", "550 …")`` from ``"SMTPDataError: 550 …"``, as workers record errors
    (``Type: message``); :data:`NO_TYPE` when the text names no type."""
    text = (error or "").strip()
    match = _TYPE.match(text)
    if match and (match.group(2) is not None or "." in match.group(1) or match.group(1)[:1].isupper()):
        return match.group(1), (match.group(2) or "").strip()
    return NO_TYPE, text


def fingerprint(kind: str, error: str | None, *, foreign_reason: str | None = None) -> Fingerprint:
    """The fingerprint of a dead letter of ``kind`` that died of ``error``; a foreign message
    (no job row) is grouped by why it is foreign."""
    if foreign_reason is not None:
        return Fingerprint(kind, NO_TYPE, normalise(f"foreign: {foreign_reason}"))
    error_type, message = split_error(error)
    return Fingerprint(kind, error_type, normalise(message))
