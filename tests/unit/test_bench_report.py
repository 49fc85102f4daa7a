"""`make bench`'s arithmetic and report: medians, speed ratios, targets, Markdown (no services)."""

from __future__ import annotations

from typing import Any

from bench import report, targets
from bench.sections import Comparison, medians, speed_ratio

EMAIL = Comparison("email", "emails/s, 1 process × 8 threads", "emails/s", "conveyor worker", "smtplib")
REPORT = Comparison("report", "seconds per report", "s", "report job", "direct", higher_is_better=False)


def noop_section() -> dict[str, Any]:
    runs = [
        {"run": 1, "system": "conveyor", "metrics": {"drain_per_s": 1000.0, "rss_mib": 130.0}, "error": None},
        {"run": 2, "system": "conveyor", "metrics": {"drain_per_s": 3000.0, "rss_mib": 140.0}, "error": None},
        {"run": 3, "system": "conveyor", "metrics": {"drain_per_s": 9.0}, "error": "BenchFailed: stuck"},
        {"run": 1, "system": "dramatiq", "metrics": {"drain_per_s": 4000.0, "rss_mib": 100.0}, "error": None},
    ]
    meds = report.medians(runs)
    return {
        "title": "No-op jobs",
        "config": {
            "jobs": 100,
            "processes": 2,
            "threads": 8,
            "prefetch": 16,
            "latency_samples": 10,
            "probe_spacing_ms": 20.0,
        },
        "systems": {
            key: {"label": key.title(), "description": "d", "producers": {"each": "send"}, "primary": "each"}
            for key in ("dramatiq", "conveyor")
        },
        "runs": runs,
        "medians": meds,
        "ratios": report.ratios(meds),
        "duration_s": 60.0,
    }


def email_section(conveyor: float, baseline: float) -> dict[str, Any]:
    metrics = {"email.conveyor": conveyor, "email.baseline": baseline, "conveyor_smtp_connections": 8}
    return {
        "title": "Email",
        "config": {"emails": 2000, "threads": 8},
        "comparisons": [EMAIL.__dict__],
        "runs": [{"run": 1, "metrics": metrics, "error": None}],
        "medians": metrics,
        "ratios": {"email": speed_ratio(EMAIL, conveyor, baseline)},
        "duration_s": 30.0,
    }


def results(sections: dict[str, Any]) -> dict[str, Any]:
    out = {
        "date": "2026-12-06",
        "config": {"runs": 3},
        "duration_s": 600.0,
        "machine": {
            "cores": 2,
            "python": "3.11",
            "rabbitmq": "3.10",
            "postgresql": "15",
            "redis": "7",
            "packages": {"dramatiq": "2.2"},
            "conveyor_commit": "abc1234",
        },
        "sections": sections,
    }
    out["targets"] = targets.check_all(out)
    return out


def test_medians_leave_failed_runs_out() -> None:
    runs = [
        {"metrics": {"a": 1.0}, "error": None},
        {"metrics": {"a": 5.0}, "error": None},
        {"metrics": {"a": 3.0}, "error": None},
        {"metrics": {"a": 100.0}, "error": "boom"},
    ]
    assert medians(runs) == {"a": 3.0}


def test_a_speed_ratio_is_inverted_for_durations_and_missing_without_both_figures() -> None:
    assert speed_ratio(EMAIL, 500.0, 1000.0) == 0.5
    assert speed_ratio(REPORT, 2.0, 1.0) == 0.5
    assert speed_ratio(EMAIL, None, 1000.0) is None
    assert speed_ratio(EMAIL, 500.0, 0.0) is None


def test_targets_are_met_or_not_and_memory_is_wanted_at_most() -> None:
    checked = {
        t["target"]: t
        for t in results({"noop": noop_section(), "email": email_section(600, 1000)})["targets"]
    }
    drain = checked["no-op drain ÷ bare Dramatiq"]
    assert (drain["ratio"], drain["met"]) == (0.5, True)  # median 2000 of the two good runs ÷ 4000
    rss = checked["worker RSS ÷ Dramatiq (no-op queues only)"]
    assert (rss["ratio"], rss["met"]) == (1.35, True)
    assert checked["emails/s ÷ plain smtplib loop (8 threads)"]["met"] is True
    celery = checked["no-op drain ÷ Celery prefork"]
    assert (celery["ratio"], celery["met"]) == (None, None)  # Celery was not in this run


def test_a_target_just_under_its_goal_is_not_met() -> None:
    checked = results({"email": email_section(499, 1000)})["targets"]
    assert [(t["ratio"], t["met"]) for t in checked] == [(0.499, False)]


def test_targets_of_sections_that_did_not_run_are_left_out() -> None:
    checked = results({"email": email_section(600, 1000)})["targets"]
    assert [t["target"] for t in checked] == ["emails/s ÷ plain smtplib loop (8 threads)"]


def test_the_markdown_has_the_targets_then_a_table_per_section() -> None:
    text = report.markdown(results({"noop": noop_section(), "email": email_section(400, 1000)}))
    assert text.index("## Targets") < text.index("## No-op jobs") < text.index("## Email")
    assert "| emails/s ÷ plain smtplib loop (8 threads) | ≥ 0.50× | 0.400× | **not met** |" in text
    assert "| no-op drain ÷ Celery prefork | ≥ 1.00× | — | not measured |" in text
    assert "| emails/s, 1 process × 8 threads | 400.00 emails/s | 1,000.00 emails/s | 0.40× |" in text
    assert "conveyor smtp connections 8.00" in text
    assert "- conveyor run 3: BenchFailed: stuck" in text


def test_a_section_comparing_conveyor_with_itself_names_its_two_sides() -> None:
    drain = Comparison("drain", "no-op drain", "jobs/s", "with keys", "no keys")
    metrics = {"drain.conveyor": 950.0, "drain.baseline": 1000.0}
    crypto = {
        "title": "Encryption at rest",
        "config": {"jobs": 2000},
        "comparisons": [drain.__dict__],
        "sides": ["encrypted", "in the clear"],
        "runs": [{"run": 1, "metrics": metrics, "error": None}],
        "medians": metrics,
        "ratios": {"drain": speed_ratio(drain, 950.0, 1000.0)},
        "duration_s": 20.0,
    }
    text = report.markdown(results({"crypto": crypto}))
    assert "| measurement | encrypted | in the clear | speed ratio |" in text
    assert "| no-op drain | 950.00 jobs/s | 1,000.00 jobs/s | 0.95× |" in text
    assert "- no-op drain: **encrypted**: with keys; **in the clear**: no keys." in text
