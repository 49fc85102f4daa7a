"""``performance/latest.md``: the latest ``make bench`` results in ``bench/results/``.

The newest full run (``YYYY-MM-DD.md``) and every newer partial run of some sections
(``YYYY-MM-DD-<section>.md``), newest first, as ``bench/report.py`` wrote them, each with the
chart ``bench/report.py`` draws from the run's JSON.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_RUN = re.compile(r"^(?P<date>\d{4}-\d{2}-\d{2})(?:-(?P<section>[a-z0-9_]+))?$")
#: "## Targets (issue 14)": the history stays in the engineering log.
_ISSUE = re.compile(r"\s*\(issue \d+\)")


@dataclass(frozen=True)
class Run:
    """One results file: a full run (``section`` None) or a run of some sections."""

    date: str
    section: str | None
    markdown: Path
    results: Path

    @property
    def stem(self) -> str:
        return self.markdown.stem

    @property
    def chart_name(self) -> str:
        return f"chart-{self.stem}.png"


def latest_results(folder: Path) -> list[Run]:
    """The newest full run and the partial runs after it, newest first (a full run and a partial
    run of the same day: the partial one first, as it ran later).

    Raises:
        FileNotFoundError: ``folder`` holds no full run with its JSON.
    """
    runs = []
    for path in folder.glob("*.md"):
        match = _RUN.match(path.stem)
        if match and path.with_suffix(".json").is_file():
            runs.append(Run(match["date"], match["section"], path, path.with_suffix(".json")))
    full = [run for run in runs if run.section is None]
    if not full:
        raise FileNotFoundError(f"{folder}: no full bench run (YYYY-MM-DD.md and .json)")
    newest = max(full, key=lambda run: run.date)
    partial = [run for run in runs if run.section is not None and run.date >= newest.date]
    return [*sorted(partial, key=lambda run: (run.date, run.stem), reverse=True), newest]


def _demoted(text: str) -> list[str]:
    """The file without its title, its headings one level down and without issue numbers, and
    the lines above its first section (sections run, machine) as paragraphs of their own."""
    lines = text.strip("\n").splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    fenced = False
    preamble = True
    out = []
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("#"):
            line = "#" + _ISSUE.sub("", line)
            preamble = False
        out += [line, ""] if preamble and line.strip() else [line]
    return out


def _title(run: Run) -> str:
    if run.section is None:
        return f"{run.date}: full run"
    return f"{run.date}: the {run.section} section"


def latest_page(runs: list[Run], charts: dict[str, bytes] | None = None) -> str:
    """The page's Markdown; ``charts`` (name → PNG) says which runs have a chart."""
    charts = charts or {}
    lines = [
        "# Latest benchmark",
        "",
        "This page is for anyone weighing Conveyor's cost: the latest results of `make bench`, "
        "Conveyor side by side with the same work done without it. It is built from "
        "`bench/results/` when the site is built: the newest full run, and the runs of single "
        "sections made after it, newest first. How the benchmark works and how to read it is in "
        "[Performance](index.md).",
        "",
    ]
    lines += [f"- [{_title(run)}](#run-{run.stem})" for run in runs]
    for run in runs:
        lines += ["", f"## {_title(run)} {{ #run-{run.stem} }}", ""]
        if run.chart_name in charts:
            lines += [f"![Chart: {_title(run)}]({run.chart_name})", ""]
        lines += _demoted(run.markdown.read_text(encoding="utf-8"))
    return "\n".join(lines) + "\n"


def charts(runs: list[Run]) -> dict[str, bytes]:
    """Chart name → PNG of each run that ``bench/report.py`` draws a chart for (it needs
    matplotlib, which the ``docs`` extra installs)."""
    from bench import report

    drawn = {}
    with tempfile.TemporaryDirectory() as folder:
        for run in runs:
            path = Path(folder) / run.chart_name
            results: dict[str, Any] = json.loads(run.results.read_text(encoding="utf-8"))
            report.chart(results, path)
            if path.exists():
                drawn[run.chart_name] = path.read_bytes()
    return drawn
