"""``jobs_summary``: the platform's own activity over a window, computed with SQL aggregates."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from jobs.reports.base import Progress, Report, ReportData
from jobs.status import JobStatus
from jobs.store import Database
from jobs.store.aggregates import percentiles_by, run_seconds, wait_seconds
from jobs.store.jobs import as_utc
from jobs.store.models import AttemptRow, JobRow

CSV_COLUMNS = [
    "id",
    "kind",
    "queue",
    "status",
    "attempts",
    "created_at",
    "started_at",
    "finished_at",
    "error",
]
#: Rows fetched per round trip by the CSV's server-side cursor.
STREAM_BATCH = 5000


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``since`` and ``until``: ISO dates or datetimes (UTC when no zone). Default: the last 24 h.

    Kept as given, so that identical requests share a cache entry; resolved when the report runs.
    """
    unknown = set(params) - {"since", "until"}
    if unknown:
        raise ValueError(f"jobs_summary params: unknown {', '.join(sorted(unknown))}; known: since, until")
    clean = {key: str(params[key]) for key in ("since", "until") if params.get(key) is not None}
    since, until = window(clean, now=datetime.now(UTC))
    if until <= since:
        raise ValueError(
            f"jobs_summary params: until ({until.isoformat()}) must be after since ({since.isoformat()})"
        )
    return clean


def window(params: Mapping[str, str], *, now: datetime) -> tuple[datetime, datetime]:
    until = _moment("until", params["until"]) if "until" in params else now
    since = _moment("since", params["since"]) if "since" in params else until - timedelta(hours=24)
    return since, until


def _moment(key: str, text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            raise ValueError(
                f"jobs_summary params: {key}={text!r} is not a date (2026-11-01) or datetime"
            ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def data(db: Database, params: dict[str, Any], progress: Progress) -> ReportData:
    since, until = window(params, now=datetime.now(UTC))
    in_window = (JobRow.created_at >= since, JobRow.created_at < until)
    with db.session() as session:
        counts = _counts(session, in_window)
        progress(0.15)
        summary: dict[str, Any] = {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "counts": counts,
            "totals": _totals(counts),
            "throughput": _throughput(session, db.dialect, since, until),
        }
        progress(0.3)
        summary["wait_seconds"] = _percentiles(session, db.dialect, wait_seconds(db.dialect), in_window, True)
        summary["run_seconds"] = _percentiles(session, db.dialect, run_seconds(db.dialect), in_window, False)
        progress(0.45)
        summary["retry_rate"] = _retry_rate(session, in_window)
        summary["top_errors"] = _top_errors(session, in_window)
        row_count = session.scalar(select(func.count()).select_from(JobRow).where(*in_window)) or 0
    progress(0.5)

    def rows() -> Iterator[tuple[Any, ...]]:
        query = (
            select(*(getattr(JobRow, c) for c in CSV_COLUMNS)).where(*in_window).order_by(JobRow.created_at)
        )
        with db.engine.connect() as connection:
            result = connection.execution_options(stream_results=True, yield_per=STREAM_BATCH).execute(query)
            for row in result:
                yield tuple(row)

    return ReportData(
        title=f"Jobs summary, {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC",
        columns=CSV_COLUMNS,
        rows=rows,
        row_count=int(row_count),
        summary=summary,
    )


def _counts(session: Session, in_window: tuple[ColumnElement[bool], ...]) -> list[dict[str, Any]]:
    query = (
        select(JobRow.kind, JobRow.status, func.count())
        .where(*in_window)
        .group_by(JobRow.kind, JobRow.status)
        .order_by(JobRow.kind, JobRow.status)
    )
    return [
        {"kind": kind, "status": status, "count": count} for kind, status, count in session.execute(query)
    ]


def _totals(counts: list[dict[str, Any]]) -> dict[str, int]:
    totals = {status.value: 0 for status in JobStatus}
    for row in counts:
        totals[row["status"]] = totals.get(row["status"], 0) + row["count"]
    totals["all"] = sum(row["count"] for row in counts)
    return totals


def _hour(dialect: str, column: Any) -> Any:
    if dialect == "postgresql":
        return func.date_trunc("hour", column)
    return func.strftime("%Y-%m-%d %H:00:00", column)


def _throughput(session: Session, dialect: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Jobs finished per hour, every hour of the window (zero-filled)."""
    hour = _hour(dialect, JobRow.finished_at).label("hour")
    query = (
        select(hour, func.count(), func.sum(case((JobRow.status == JobStatus.FAILED.value, 1), else_=0)))
        .where(JobRow.finished_at >= since, JobRow.finished_at < until)
        .group_by(hour)
    )
    found = {}
    for bucket, done, failed in session.execute(query):
        moment = as_utc(bucket if isinstance(bucket, datetime) else datetime.fromisoformat(str(bucket)))
        found[moment] = (int(done), int(failed or 0))
    start = since.replace(minute=0, second=0, microsecond=0)
    series: list[dict[str, Any]] = []
    moment = start
    while moment < until and len(series) < 24 * 93:
        done, failed = found.get(moment, (0, 0))
        series.append({"hour": moment.isoformat(), "finished": done, "failed": failed})
        moment += timedelta(hours=1)
    return series


def _percentiles(
    session: Session,
    dialect: str,
    value: Any,
    in_window: tuple[ColumnElement[bool], ...],
    first_attempt: bool,
) -> dict[str, float | None]:
    """p50/p95/p99 of ``value`` over attempts (the first only, for queue waits)."""
    conditions = [*in_window, *([AttemptRow.attempt == 1] if first_attempt else [])]
    return percentiles_by(session, dialect, value, conditions)[None]


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


def _retry_rate(session: Session, in_window: tuple[ColumnElement[bool], ...]) -> float | None:
    finished = JobRow.status.in_([JobStatus.SUCCEEDED.value, JobStatus.FAILED.value])
    value = session.scalar(
        select(func.avg(case((JobRow.attempts > 1, 1.0), else_=0.0))).where(*in_window, finished)
    )
    return _round(value)


def _top_errors(
    session: Session, in_window: tuple[ColumnElement[bool], ...], limit: int = 10
) -> list[dict[str, Any]]:
    error = func.substr(JobRow.error, 1, 200).label("error")
    query = (
        select(error, func.count().label("n"))
        .where(*in_window, JobRow.status == JobStatus.FAILED.value, JobRow.error.is_not(None))
        .group_by(error)
        .order_by(func.count().desc(), error)
        .limit(limit)
    )
    return [{"error": text, "count": count} for text, count in session.execute(query)]


REPORT = Report(name="jobs_summary", title="Jobs summary", check_params=check_params, data=data)
