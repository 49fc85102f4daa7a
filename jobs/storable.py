"""What the job store can hold, checked before anything is sent (producers) or run (workers).

PostgreSQL refuses some values Python and JSON accept: a NUL character (``\\x00``) in any text
or ``jsonb`` string, an unpaired UTF-16 surrogate (``\\ud800``), an integer beyond the column's
32 bits (``max_retries``). Left unchecked, such a value would reach the database only after
the message was out: the producer would get a raw driver error, and the worker could not
record the job. So every payload is walked once here (keys and nested values too) and refused
with a ``ValueError`` naming the field, e.g. ``payload.context.name: contains a NUL
character``; text the worker writes (errors, tracebacks) is made storable with
:func:`storable_text` instead.

Pure functions, no I/O: the client, the CLI, the scheduler and the worker share them.
"""

from __future__ import annotations

import json
import math
from typing import Any

#: The largest value of PostgreSQL's ``integer`` columns (``max_retries``, ``priority``, ``attempts``).
INT32_MAX = 2**31 - 1
#: Levels of nested objects and lists a payload may have (PostgreSQL's JSON parser and Python's
#: ``json`` module both recurse: a deeper tree ends in a stack error instead of a clear one).
MAX_DEPTH = 64
#: Bits of the largest integer in a payload: about 4,000 decimal digits, under Python's limit
#: for turning an integer into text (4,300 digits), which JSON encoding hits first.
MAX_INT_BITS = 13_000


def check_storable(value: Any, path: str = "payload") -> None:
    """Raise ``ValueError`` naming the first place in ``value`` the store cannot hold.

    ``value`` is a JSON-like tree (dicts, lists, strings, numbers, booleans, None).

    Raises:
        ValueError: ``<path>: contains a NUL character`` (or an unpaired surrogate, a number
            that is not finite or too large, a type that is not JSON, nesting deeper than
            :data:`MAX_DEPTH`), ``<path>`` naming the field, e.g. ``payload.context.name``.
    """
    try:
        _walk(value, 0)
    except _Refused as refused:
        where = path + "".join(reversed(refused.segments))
        raise ValueError(f"{where}: {refused.problem}") from None


class _Refused(Exception):
    """What is wrong and where: each level of the walk adds its segment as the error passes up,
    so that the common case (nothing wrong) builds no path at all."""

    def __init__(self, problem: str, segment: str = "") -> None:
        self.problem = problem
        self.segments = [segment] if segment else []


def _walk(item: Any, depth: int) -> None:
    # Recursive, but never deeper than MAX_DEPTH: a hostile depth is refused before the stack is.
    if isinstance(item, str):
        _check_text(item)
    elif isinstance(item, dict | list | tuple):
        if depth >= MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str):
                    _check_key(key)
                elif not (key is None or isinstance(key, int | float)):
                    raise _Refused(f"a key of type {type(key).__name__} is not JSON")
                try:
                    _walk(child, depth + 1)
                except _Refused as refused:
                    refused.segments.append(f".{_shown(key)}" if isinstance(key, str) else f".{key}")
                    raise
        else:
            for index, child in enumerate(item):
                try:
                    _walk(child, depth + 1)
                except _Refused as refused:
                    refused.segments.append(f"[{index}]")
                    raise
    elif isinstance(item, bool) or item is None:
        return
    elif isinstance(item, int):
        if item.bit_length() > MAX_INT_BITS:
            raise _Refused("integer too large (more than about 4,000 digits)")
    elif isinstance(item, float):
        if not math.isfinite(item):
            raise _Refused(f"{item} is not a JSON number")
    else:
        raise _Refused(f"a {type(item).__name__} is not JSON")


def _check_key(key: str) -> None:
    try:
        _check_text(key)
    except _Refused as refused:
        raise _Refused(refused.problem, f": key {_shown(key)}") from None


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise _Refused("contains a NUL character")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _Refused(
                f"contains an unpaired surrogate (U+{ord(text[exc.start]):04X}), not valid Unicode"
            ) from None


def _shown(key: str, limit: int = 40) -> str:
    """A key as it can be printed and stored: plain when it is a simple name, else escaped."""
    if key.isidentifier() and len(key) <= limit:
        return key
    text = ascii(key[:limit])
    return text + "…" if len(key) > limit else text


#: Built once: ``json.dumps`` with arguments builds a new encoder on every call.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def payload_bytes(payload: Any) -> int:
    """The size of ``payload`` as stored: its compact JSON in UTF-8 (call :func:`check_storable` first).

    Raises:
        ValueError: ``payload`` is not JSON-serialisable.
    """
    try:
        encoded = _COMPACT.encode(payload)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"payload is not JSON-serialisable: {exc}") from None
    return len(encoded.encode("utf-8", "surrogatepass"))


def check_size(payload: Any, limit: int | None, what: str = "payload") -> int:
    """The stored size of ``payload``; ``ValueError`` when it is over ``limit`` bytes (None: no cap)."""
    size = payload_bytes(payload)
    if limit is not None and size > limit:
        raise ValueError(
            f"{what}: {size:,} bytes of JSON, more than CONVEYOR_MAX_PAYLOAD_BYTES={limit:,} allows; "
            "store big data as an artifact and pass its id"
        )
    return size


def check_int(name: str, value: Any, *, low: int = 0, high: int = INT32_MAX) -> int:
    """``value`` as a whole number within ``[low, high]``, or a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number ≥ {low}, not {type(value).__name__}")
    if high == INT32_MAX and value < low:
        raise ValueError(f"{name} must be a whole number ≥ {low}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high} (got {_short(value)})")
    return value


def _short(number: int) -> str:
    digits = str(number) if number.bit_length() < 200 else f"a {len(format(number, 'x')) * 4}-bit number"
    return digits if len(digits) <= 30 else digits[:12] + "…"


def check_seconds(name: str, value: Any, *, high: float) -> float:
    """``value`` as finite seconds within ``[0, high]``, or a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large (at most {high:,.0f} seconds)") from None
    if math.isnan(seconds):
        raise ValueError(f"{name} must be a number of seconds, not NaN")
    if seconds < 0:
        raise ValueError(f"{name} must not be negative")
    if seconds > high:
        raise ValueError(f"{name}={value:g} is too large (at most {high:,.0f} seconds)")
    return seconds


def storable_text(text: str | None) -> str | None:
    """``text`` the store can hold: NUL shown as ``\\x00``, unpaired surrogates as ``\\udXXX``.

    For what the worker writes of its own (an error's message, a traceback), which may quote
    anything a job met: losing such a write would lose the attempt's record.
    """
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
