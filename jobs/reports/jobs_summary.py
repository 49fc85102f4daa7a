"""``jobs_summary``: the platform's own activity over a window, computed with SQL aggregates."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from jobs.reports.base import Progress, Report, ReportData
from jobs.status import JobStatus
from jobs.store import Database
from jobs.store.reporting import JobsReportStore, WindowReader

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
    store = JobsReportStore(db)
    with store.window(since, until) as reader:
        counts = [{"kind": k, "status": s, "count": n} for k, s, n in reader.counts()]
        progress(0.15)
        summary: dict[str, Any] = {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "counts": counts,
            "totals": _totals(counts),
            "throughput": _throughput(reader, since, until),
        }
        progress(0.3)
        summary["wait_seconds"] = reader.wait_percentiles()
        summary["run_seconds"] = reader.run_percentiles()
        progress(0.45)
        summary["retry_rate"] = _round(reader.retry_rate())
        summary["top_errors"] = [{"error": text, "count": n} for text, n in reader.top_errors(limit=10)]
        row_count = reader.row_count()
    progress(0.5)
    return ReportData(
        title=f"Jobs summary, {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC",
        columns=CSV_COLUMNS,
        rows=lambda: store.rows(since, until, CSV_COLUMNS, STREAM_BATCH),
        row_count=row_count,
        summary=summary,
    )


def _totals(counts: list[dict[str, Any]]) -> dict[str, int]:
    totals = {status.value: 0 for status in JobStatus}
    for row in counts:
        totals[row["status"]] = totals.get(row["status"], 0) + row["count"]
    totals["all"] = sum(row["count"] for row in counts)
    return totals


def _throughput(reader: WindowReader, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Jobs finished per hour, every hour of the window (zero-filled)."""
    found = reader.finished_per_hour()
    start = since.replace(minute=0, second=0, microsecond=0)
    series: list[dict[str, Any]] = []
    moment = start
    while moment < until and len(series) < 24 * 93:
        done, failed = found.get(moment, (0, 0))
        series.append({"hour": moment.isoformat(), "finished": done, "failed": failed})
        moment += timedelta(hours=1)
    return series


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


REPORT = Report(name="jobs_summary", title="Jobs summary", check_params=check_params, data=data)
