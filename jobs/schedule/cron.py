"""When a schedule entry is due: cron expressions (through ``cronsim``) and fixed intervals.

Every instant here is an aware UTC ``datetime``; a tick's identity is its UTC instant.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

#: The nicknames cron understands, as the 5-field expressions they stand for.
NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_INTERVAL_RE = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Timing(Protocol):
    """When an entry is due."""

    def describe(self) -> str:
        """The expression as the schedule file spells it (``0 6 * * *``, ``every 30s``)."""
        ...

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment``."""
        ...

    def latest(self, after: datetime, until: datetime, limit: int) -> tuple[list[datetime], bool]:
        """Up to ``limit`` of the most recent ticks in ``(after, until]``, oldest first, and
        whether older ones in that window were left out."""
        ...


def parse_timing(cron: str | None, every: str | None, timezone: str | None) -> Timing:
    """A :class:`Timing` from an entry's ``cron`` (with its ``timezone``) or ``every``.

    Raises:
        ValueError: a bad expression, interval or time zone (the message says which).
    """
    if (cron is None) == (every is None):
        raise ValueError("give exactly one of cron or every")
    if every is not None:
        if timezone is not None:
            raise ValueError("timezone applies to cron only: an interval counts from 1970-01-01 UTC")
        return IntervalTiming.parse(every)
    assert cron is not None
    return CronTiming.parse(cron, timezone)


@dataclass(frozen=True)
class CronTiming:
    """A cron expression: 5 fields (minute first), 6 fields (seconds first) or a ``@nickname``,
    evaluated in ``zone`` as Debian cron does. On DST changes a 5-field entry whose minute and
    hour fields do not start with ``*`` runs once: a local time that does not exist runs at the
    first minute after the gap, one that happens twice runs the first time. Other entries follow
    real time (``30 * * * *`` runs 23, 24 or 25 times that day).
    """

    expression: str
    zone: tzinfo

    @classmethod
    def parse(cls, text: str, timezone: str | None) -> CronTiming:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("cron must be a non-empty string")
        expression = NICKNAMES.get(text.strip().lower(), text.strip())
        if expression.startswith("@"):
            raise ValueError(f"cron {text!r}: unknown nickname; known: {', '.join(NICKNAMES)}")
        fields = len(expression.split())
        if fields not in (5, 6):
            raise ValueError(
                f"cron {text!r}: {fields} fields; expected 5 (minute first) or 6 (seconds first)"
            )
        zone = _zone(timezone)
        timing = cls(text.strip(), zone)
        try:
            timing.next_after(datetime.now(UTC))
        except CronSimError as exc:
            raise ValueError(f"cron {text!r}: {exc}") from None
        return timing

    @property
    def _fields(self) -> str:
        return NICKNAMES.get(self.expression.lower(), self.expression)

    def describe(self) -> str:
        zone = str(self.zone)
        return self.expression if zone == "UTC" else f"{self.expression} ({zone})"

    def next_after(self, moment: datetime) -> datetime:
        for tick in self._forward(moment):
            if tick > moment:
                return tick
        raise ValueError(f"cron {self.expression!r}: no tick in the next 50 years")

    def latest(self, after: datetime, until: datetime, limit: int) -> tuple[list[datetime], bool]:
        found: list[datetime] = []
        # cronsim steps back one second before matching, unless given sub-second precision:
        # so that ``until`` itself counts, start just after its whole second.
        start = until.replace(microsecond=0) + timedelta(microseconds=1)
        for local in CronSim(self._fields, start.astimezone(self.zone), reverse=True):
            tick = local.astimezone(UTC)
            if tick > until:
                continue
            if tick <= after:
                return found[::-1], False
            if len(found) == limit:
                return found[::-1], True
            found.append(tick)
        return found[::-1], False  # pragma: no cover - cronsim gives up only after 50 years

    def _forward(self, moment: datetime) -> Iterator[datetime]:
        for local in CronSim(self._fields, moment.astimezone(self.zone)):
            yield local.astimezone(UTC)


@dataclass(frozen=True)
class IntervalTiming:
    """Every ``seconds``, counted from 1970-01-01 UTC, so that every replica agrees on the ticks
    (``every = "1h"`` ticks on the hour, ``"1s"`` on each second)."""

    seconds: int
    text: str

    @classmethod
    def parse(cls, text: str) -> IntervalTiming:
        match = _INTERVAL_RE.match(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"every {text!r}: expected a number and a unit s, m, h or d (e.g. 30s, 5m)")
        seconds = int(match[1]) * _UNIT_SECONDS[match[2]]
        if seconds < 1:
            raise ValueError(f"every {text!r}: the interval must be at least 1s")
        return cls(seconds, text.strip())

    def describe(self) -> str:
        return f"every {self.text}"

    def next_after(self, moment: datetime) -> datetime:
        elapsed = (moment - _EPOCH) // timedelta(seconds=self.seconds)
        return _EPOCH + timedelta(seconds=(elapsed + 1) * self.seconds)

    def latest(self, after: datetime, until: datetime, limit: int) -> tuple[list[datetime], bool]:
        step = timedelta(seconds=self.seconds)
        newest = _EPOCH + ((until - _EPOCH) // step) * step
        found: list[datetime] = []
        tick = newest
        while tick > after and len(found) < limit:
            found.append(tick)
            tick -= step
        return found[::-1], tick > after


def _zone(name: str | None) -> tzinfo:
    if name is None:
        return UTC
    try:
        return ZoneInfo(name)
    except (ValueError, OSError, KeyError):
        raise ValueError(f"timezone {name!r}: unknown (use an IANA name such as Europe/Paris)") from None


def utc_iso(moment: datetime) -> str:
    """``2026-11-30T06:00:00Z``: a tick as it appears in idempotency keys and output."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
