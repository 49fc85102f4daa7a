"""The reports Conveyor knows. A new report: a module with a ``REPORT`` and one line here."""

from __future__ import annotations

from jobs.reports import jobs_summary
from jobs.reports.base import Report

REPORTS: dict[str, Report] = {report.name: report for report in (jobs_summary.REPORT,)}


def get_report(name: object) -> Report:
    """Raises ``ValueError`` listing the known reports."""
    report = REPORTS.get(name) if isinstance(name, str) else None
    if report is None:
        raise ValueError(f"unknown report {name!r}; known reports: {', '.join(sorted(REPORTS))}")
    return report
