"""The dashboard benchmark's arithmetic and report: percentiles, the p95 target, Markdown (no services)."""

from __future__ import annotations

from typing import Any

from bench import report, targets
from bench.sections import medians
from bench.web import percentile

PROBES = [
    {"label": "overview (html)", "path": "/"},
    {"label": "overview (api)", "path": "/api/overview"},
    {"label": "jobs, search by id (html)", "path": "/jobs?q=0b0e…"},
    {"label": "jobs, search by id (api)", "path": "/api/jobs?q=0b0e…"},
]


def web_section(slow_ms: float, errors: dict[str, str] | None = None) -> dict[str, Any]:
    metrics = {
        "overview (html).p50": 12.0,
        "overview (html).p95": 20.0,
        "overview (api).p50": 8.0,
        "overview (api).p95": 11.0,
        "jobs, search by id (html).p50": 30.0,
        "jobs, search by id (html).p95": slow_ms,
        "jobs, search by id (api).p50": 25.0,
        "jobs, search by id (api).p95": 40.0,
    }
    runs = [{"run": 1, "metrics": metrics, "errors": errors or {}, "error": None}]
    meds = medians(runs)
    return {
        "title": "Web dashboard",
        "config": {"rows": 1_000_000, "requests_per_probe": 50},
        "target_ms": targets.WEB_P95_MS,
        "probes": PROBES,
        "runs": runs,
        "medians": meds,
        "slowest_p95_ms": max(v for k, v in meds.items() if k.endswith(".p95")),
        "error": f"{len(errors)} probe(s) did not answer 200" if errors else None,
        "duration_s": 90.0,
    }


def results(section: dict[str, Any]) -> dict[str, Any]:
    out = {
        "date": "2026-12-07",
        "config": {"runs": 1},
        "duration_s": 120.0,
        "machine": {
            "cores": 2,
            "python": "3.11",
            "rabbitmq": "3.10",
            "postgresql": "15",
            "redis": "7",
            "packages": {},
            "conveyor_commit": "abc1234",
        },
        "sections": {"web": section},
    }
    out["targets"] = targets.check_all(out)
    return out


def test_the_95th_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 0.5) == 50.0
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([1.0, 100.0], 0.95) == 100.0


def test_the_target_is_met_when_the_slowest_p95_is_under_200_ms() -> None:
    (met,) = results(web_section(150.0))["targets"]
    assert met["met"] is True
    assert met["ratio"] == 150.0
    assert met["wanted"] == "≤ 200.00 ms"


def test_one_slow_page_misses_the_target() -> None:
    (missed,) = results(web_section(201.0))["targets"]
    assert missed["met"] is False


def test_a_page_that_did_not_answer_leaves_the_target_unmeasured() -> None:
    section = web_section(50.0, errors={"dead letters (html)": "404 on /dead: Not Found"})
    (unmeasured,) = results(section)["targets"]
    assert unmeasured["met"] is None


def test_the_markdown_has_a_row_per_page_with_both_twins_and_a_verdict() -> None:
    text = report.markdown(results(web_section(250.0)))

    assert "| overview | 12.0 | 20.0 | 8.0 | 11.0 | yes |" in text
    assert "| jobs, search by id | 30.0 | 250.0 | 25.0 | 40.0 | **no** |" in text
    assert "- jobs, search by id: `/jobs?q=0b0e…`" in text
    assert "rows: 1,000,000" in text


def test_the_markdown_lists_the_pages_that_did_not_answer() -> None:
    section = web_section(50.0, errors={"dead letters (html)": "404 on /dead: Not Found"})
    text = report.markdown(results(section))
    assert "Not timed (no 200 answer):" in text
    assert "- dead letters (html): 404 on /dead: Not Found" in text
