"""Report pieces that need no services: params, the SVG chart, CSV chunks."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from jobs.reports.base import ReportData
from jobs.reports.jobs_summary import check_params, window
from jobs.reports.render import csv_chunks, throughput_chart


def test_params_default_to_the_last_24_hours_and_accept_dates_or_datetimes() -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    assert window({}, now=now) == (datetime(2026, 11, 28, 12, 0, tzinfo=UTC), now)
    assert window({"since": "2026-11-01", "until": "2026-11-02T06:00:00+01:00"}, now=now) == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 11, 2, 5, 0, tzinfo=UTC),
    )
    assert check_params({"since": "2026-11-01"}) == {"since": "2026-11-01"}


def test_the_chart_is_an_inline_svg_with_one_bar_per_hour() -> None:
    series = [{"hour": f"2026-11-29T{h:02d}:00:00+00:00", "finished": h, "failed": h % 2} for h in range(6)]
    svg = str(throughput_chart(series))
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    assert svg.count("<title>") == 6
    assert "<script" not in svg


def test_csv_chunks_stream_every_row_after_the_header() -> None:
    rows = [(i, "x" * 100, datetime(2026, 1, 1, tzinfo=UTC)) for i in range(30_000)]
    data = ReportData(title="t", columns=["n", "text", "at"], rows=lambda: iter(rows), row_count=len(rows))
    seen: list[int] = []

    chunks = list(csv_chunks(data, seen.append))

    assert len(chunks) > 2  # more than one 1 MiB chunk: it streamed
    parsed = list(csv.reader(io.StringIO(b"".join(chunks).decode())))
    assert parsed[0] == ["n", "text", "at"]
    assert len(parsed) == 30_001
    assert parsed[-1][2] == "2026-01-01T00:00:00+00:00"
    assert seen[-1] == 30_000


@pytest.mark.parametrize("bad", [{"since": "soon"}, {"since": "2026-11-02", "until": "2026-11-01"}, {"x": 1}])
def test_bad_params_are_value_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="jobs_summary params"):
        check_params(bad)
