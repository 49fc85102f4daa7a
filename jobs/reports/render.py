"""Render a report's data: standalone HTML (with an inline SVG chart), streamed CSV, PDF."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, TemplateNotFound, select_autoescape
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from jobs.defaults import ARTIFACT_CHUNK
from jobs.errors import PermanentError
from jobs.reports.base import ReportData


class ReportRenderer:
    """One per worker process: report templates compiled once."""

    def __init__(self, folders: list[Path]) -> None:
        self.env = ImmutableSandboxedEnvironment(
            loader=FileSystemLoader([str(folder) for folder in folders]),
            undefined=StrictUndefined,
            autoescape=select_autoescape(["html"]),
            auto_reload=False,
        )

    def html(self, name: str, data: ReportData, params: dict[str, Any]) -> str:
        """Raises ``PermanentError`` for a missing template or a template error."""
        try:
            template = self.env.get_template(f"reports/{name}.html")
            return template.render(
                title=data.title,
                summary=data.summary,
                params=params,
                row_count=data.row_count,
                columns=data.columns,
                chart=throughput_chart(data.summary.get("throughput", [])),
                generated_at=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            )
        except TemplateNotFound:
            raise PermanentError(f"report {name!r} has no template reports/{name}.html") from None
        except TemplateError as exc:
            raise PermanentError(f"report {name!r}: template error: {exc}") from None


def csv_chunks(data: ReportData, on_rows: Callable[[int], None] = lambda _n: None) -> Iterator[bytes]:
    """The CSV as ~1 MiB chunks of UTF-8, read from the rows' cursor as it goes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(data.columns)
    written = 0
    for row in data.rows():
        writer.writerow([_cell(v) for v in row])
        written += 1
        if buffer.tell() >= ARTIFACT_CHUNK:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
            on_rows(written)
    yield buffer.getvalue().encode()
    on_rows(written)


def _cell(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def pdf(html: str) -> bytes:
    """The same HTML, typeset by WeasyPrint."""
    from weasyprint import HTML  # imported on use: it loads Pango, which only report workers need

    document: bytes = HTML(string=html).write_pdf()
    return document


def throughput_chart(series: list[dict[str, Any]], width: int = 720, height: int = 220) -> Markup:
    """Finished (and failed) jobs per hour as an inline SVG bar chart: no JavaScript, so it
    renders the same in a browser, an email and a PDF."""
    if not series:
        return Markup('<svg xmlns="http://www.w3.org/2000/svg" width="0" height="0"></svg>')
    left, bottom, top = 44, 28, 12
    plot_w, plot_h = width - left - 8, height - bottom - top
    peak = max(max(p["finished"] for p in series), 1)
    bar = plot_w / len(series)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Jobs finished per hour">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 8}" y2="{top + plot_h}" stroke="#9ca3af"/>',
        f'<text x="{left - 6}" y="{top + 4}" font-size="10" text-anchor="end" fill="#6b7280">{peak}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" font-size="10" text-anchor="end" fill="#6b7280">0</text>',
    ]
    for i, point in enumerate(series):
        x = left + i * bar
        done_h = plot_h * point["finished"] / peak
        failed_h = plot_h * point["failed"] / peak
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{top + plot_h - done_h:.1f}" width="{max(bar - 2, 1):.1f}" '
            f'height="{done_h:.1f}" fill="#6366f1"><title>{point["hour"]}: {point["finished"]}</title></rect>'
        )
        if failed_h:
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{top + plot_h - failed_h:.1f}" width="{max(bar - 2, 1):.1f}" '
                f'height="{failed_h:.1f}" fill="#ef4444"/>'
            )
    step = max(1, len(series) // 8)
    for i in range(0, len(series), step):
        label = series[i]["hour"][11:16] if i else series[i]["hour"][5:16].replace("T", " ")
        parts.append(
            f'<text x="{left + i * bar + bar / 2:.1f}" y="{height - 10}" font-size="10" '
            f'text-anchor="middle" fill="#6b7280">{label}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 -- built from numbers and ISO timestamps only
