"""SQL aggregates the admin views and reports share: durations and percentiles.

PostgreSQL computes percentiles with ``percentile_cont``; SQLite (the demo) has no such
aggregate, so there the value at each rank is read with ORDER BY … OFFSET.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Float, cast, func, select

if TYPE_CHECKING:
    from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from jobs.store.tables import Attempts, Jobs

PERCENTILES = (0.5, 0.95, 0.99)
NAMES = tuple(f"p{round(p * 100)}" for p in PERCENTILES)


def seconds_between(dialect: str, end: Any, start: Any) -> Any:
    if dialect == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def wait_seconds(dialect: str) -> Any:
    """Queue wait of an attempt: from the job's creation to the attempt's start."""
    return seconds_between(dialect, Attempts.started_at, Jobs.created_at)


def run_seconds(dialect: str) -> Any:
    return seconds_between(dialect, Attempts.finished_at, Attempts.started_at)


def percentiles_by(
    session: Connection | Session,
    dialect: str,
    value: Any,
    conditions: list[ColumnElement[bool]],
    group: Any | None = None,
) -> dict[Any, dict[str, float | None]]:
    """p50/p95/p99 of ``value`` over finished attempts joined to their jobs, per ``group``
    (one entry, key ``None``, without a group)."""
    conditions = [*conditions, Attempts.finished_at.is_not(None)]
    label = group.label("g") if group is not None else None
    columns = [cast(value, Float).label("v"), *([label] if label is not None else [])]
    base = select(*columns).select_from(Jobs).join(Attempts, Attempts.job_id == Jobs.id).where(*conditions)
    sub = base.subquery()
    if dialect == "postgresql":
        aggregates = [func.percentile_cont(p).within_group(sub.c.v) for p in PERCENTILES]
        if label is None:
            return {None: _named(session.execute(select(*aggregates)).one())}
        rows = session.execute(select(sub.c.g, *aggregates).group_by(sub.c.g))
        return {row[0]: _named(row[1:]) for row in rows}
    groups = [None] if label is None else list(session.scalars(select(sub.c.g).distinct()))
    result = {}
    for key in groups:
        values = select(sub.c.v) if key is None else select(sub.c.v).where(sub.c.g == key)
        inner = values.subquery()
        total = session.scalar(select(func.count()).select_from(inner)) or 0
        picks = []
        for p in PERCENTILES:
            offset = int(p * (total - 1)) if total else 0
            picks.append(
                session.scalar(select(inner.c.v).order_by(inner.c.v).offset(offset).limit(1))
                if total
                else None
            )
        result[key] = _named(picks)
    return result


def _named(values: Any) -> dict[str, float | None]:
    return {name: None if v is None else round(float(v), 4) for name, v in zip(NAMES, values, strict=True)}
