"""Jinja2 filters of the dashboard's templates: ages, durations and counts a person reads at a glance."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


def duration(seconds: Any) -> str:
    """``0.042 s``, ``12.5 s``, ``4 min``, ``2.5 h``, ``3.1 d``; empty for None."""
    if seconds is None:
        return ""
    value = float(seconds)
    if value < 10:
        return f"{value:.3f} s"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    if value < 172800:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} d"


def ago(value: Any, now: datetime | None = None) -> str:
    """How long ago an ISO 8601 moment was (``5 s ago``); a clock ahead of ours gives ``just now``."""
    moment = _moment(value)
    if moment is None:
        return ""
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    return "just now" if seconds < 1 else f"{duration(seconds).replace('.000', '')} ago"


def clock(value: Any) -> str:
    """An ISO 8601 moment as ``2026-12-07 06:15:00`` UTC; empty for None."""
    moment = _moment(value)
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def count(value: Any) -> str:
    """``12,345``; ``–`` for None (a service that did not answer)."""
    return "–" if value is None else f"{int(value):,}"


def short_queue(value: Any, namespace: str) -> str:
    """``email`` for ``<namespace>.email``."""
    return str(value).removeprefix(f"{namespace}.")


#: name → filter, registered on the templates' environment by ``create_app``.
FILTERS: dict[str, Callable[..., str]] = {
    "duration": duration,
    "ago": ago,
    "clock": clock,
    "count": count,
    "short_queue": short_queue,
}
