"""The schedule file: TOML ``[[job]]`` entries, validated as a whole before anything runs.

.. code-block:: toml

    [[job]]
    name = "daily-summary"          # unique; part of each tick's idempotency key
    cron = "0 6 * * *"              # or every = "30s"; cron also takes @daily, 6 fields (seconds first)
    timezone = "Europe/Paris"       # cron only; default UTC
    kind = "report"
    payload = { report = "jobs_summary", formats = ["html"], email_to = ["admins@example.com"] }
    catch_up = "latest"             # all (default) | latest | none
    max_retries = 2                 # also priority, min_backoff, max_backoff
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from jobs.delivery import DeliveryOptions
from jobs.errors import SettingsError
from jobs.kinds import get_kind
from jobs.schedule.cron import Timing, parse_timing, utc_iso
from jobs.settings import Settings
from jobs.storable import check_size, check_storable

_OPTION_KEYS = ("priority", "max_retries", "min_backoff", "max_backoff")
ENTRY_KEYS = frozenset({"name", "cron", "every", "timezone", "kind", "payload", "catch_up", *_OPTION_KEYS})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class CatchUp(StrEnum):
    """What a leader does with the ticks that fell due while no scheduler ran (see ``runner``)."""

    #: Enqueue every missed tick, oldest first, up to ``MAX_CATCH_UP`` (the most recent ones).
    ALL = "all"
    #: Enqueue only the most recent missed tick.
    LATEST = "latest"
    #: Enqueue no tick that is more than ``ON_TIME_GRACE`` late.
    NONE = "none"


@dataclass(frozen=True)
class ScheduleEntry:
    """One ``[[job]]``: what to enqueue (kind, payload, delivery options) and when."""

    name: str
    kind: str
    timing: Timing
    payload: Mapping[str, Any] = field(default_factory=dict)
    catch_up: CatchUp = CatchUp.ALL
    options: DeliveryOptions = field(default_factory=DeliveryOptions)

    def idempotency_key(self, namespace: str, tick: datetime) -> str:
        """``schedule:<namespace>:<name>:<tick UTC ISO>``: one job per tick, whoever enqueues it."""
        return f"{key_prefix(namespace, self.name)}{utc_iso(tick)}"


@dataclass(frozen=True)
class Schedule:
    """A validated schedule file."""

    source: str
    entries: tuple[ScheduleEntry, ...]

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]


def key_prefix(namespace: str, name: str) -> str:
    """The idempotency-key prefix of one entry's jobs (for ``LIKE 'prefix%'``)."""
    return f"schedule:{namespace}:{name}:"


def load_schedule(path: str | Path, settings: Settings) -> Schedule:
    """Read and validate a schedule file.

    Raises:
        SettingsError: the file cannot be read, is not TOML, or an entry is invalid (the
            message names the file and the entry).
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"schedule {source}: cannot be read: {exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"schedule {source}: not valid TOML: {exc}") from None
    return parse_schedule(document, settings, source=source)


def parse_schedule(document: Mapping[str, Any], settings: Settings, *, source: str = "schedule") -> Schedule:
    """Validate a parsed schedule document (see :func:`load_schedule`)."""
    unknown = sorted(set(document) - {"job"})
    if unknown:
        raise SettingsError(
            f"schedule {source}: unknown top-level key(s) {', '.join(unknown)}; entries are [[job]] tables"
        )
    raw_entries = document.get("job")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise SettingsError(f"schedule {source}: no [[job]] entries")
    entries: list[ScheduleEntry] = []
    seen: set[str] = set()
    for number, raw in enumerate(raw_entries, 1):
        label = _label(number, raw)
        try:
            entry = parse_entry(raw, settings)
        except ValueError as exc:
            raise SettingsError(f"schedule {source}: {label}: {exc}") from None
        if entry.name in seen:
            raise SettingsError(f"schedule {source}: {label}: the name is already used by another entry")
        seen.add(entry.name)
        entries.append(entry)
    return Schedule(source, tuple(entries))


def parse_entry(raw: Any, settings: Settings) -> ScheduleEntry:
    """One ``[[job]]`` table.

    Raises:
        ValueError: the first problem found, naming the key.
    """
    if not isinstance(raw, Mapping):
        raise ValueError("must be a table")
    unknown = sorted(set(raw) - ENTRY_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(ENTRY_KEYS))}")
    for required in ("name", "kind"):
        if not isinstance(raw.get(required), str):
            raise ValueError(f"{required} is required (a string)")
    if not _NAME_RE.match(raw["name"]):
        raise ValueError(
            "name must be 1-100 letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    timing = parse_timing(
        _optional_str(raw, "cron"), _optional_str(raw, "every"), _optional_str(raw, "timezone")
    )
    kind = get_kind(raw["kind"])
    payload = raw.get("payload", {})
    if not isinstance(payload, Mapping):
        raise ValueError("payload must be a table")
    try:
        json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError("payload must be JSON: write dates and times as quoted strings") from None
    clean = kind.validate(payload, settings)
    # What the store cannot hold, or a payload over the cap, is refused at start-up too.
    check_storable(clean, "payload")
    check_size(clean, settings.max_payload_bytes)
    options = DeliveryOptions(**{key: raw[key] for key in _OPTION_KEYS if key in raw})
    options.check(settings.max_priority)
    return ScheduleEntry(
        name=raw["name"],
        kind=kind.name,
        timing=timing,
        payload=dict(payload),
        catch_up=_catch_up(raw.get("catch_up", CatchUp.ALL.value)),
        options=options,
    )


def _catch_up(value: Any) -> CatchUp:
    try:
        return CatchUp(value)
    except ValueError:
        choices = ", ".join(c.value for c in CatchUp)
        raise ValueError(f"catch_up must be one of {choices}, not {value!r}") from None


def _optional_str(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _label(number: int, raw: Any) -> str:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    return f"job #{number} {name!r}" if isinstance(name, str) else f"job #{number}"
