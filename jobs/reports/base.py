"""What a report is: a name, checked params, and a data function over the job store."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jobs.store import Database

#: Called with a fraction 0..1 as the report advances.
Progress = Callable[[float], None]


@dataclass
class ReportData:
    """What a data function returns: a summary for the HTML, and rows for the CSV."""

    title: str
    columns: list[str]
    #: Streamed: a generator over a server-side cursor, consumed once by the CSV writer.
    rows: Callable[[], Iterator[tuple[Any, ...]]]
    #: How many rows ``rows`` will give (for progress and the job's result).
    row_count: int
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    """A report: ``check_params`` raises ``ValueError``; ``data`` reads the store."""

    name: str
    title: str
    check_params: Callable[[Mapping[str, Any]], dict[str, Any]]
    data: Callable[[Database, dict[str, Any], Progress], ReportData]
