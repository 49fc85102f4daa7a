"""The performance targets (Conveyor ÷ a baseline doing the same work), checked against one
run's medians: met, not met, or not measured."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Results = dict[str, Any]
#: The dashboard's target (issue 18): every page's p95 under this many milliseconds.
WEB_P95_MS = 200.0


def noop_ratio(baseline: str, row: str) -> Callable[[Results], float | None]:
    """A ratio of the no-op section's table (Conveyor's median ÷ the baseline's)."""

    def pick(results: Results) -> float | None:
        ratios = results.get("sections", {}).get("noop", {}).get("ratios", {})
        value = ratios.get(baseline, {}).get(row)
        return None if value is None else float(value)

    return pick


def work_median(section: str, key: str, scale: float = 1.0) -> Callable[[Results], float | None]:
    """A real-work section's median of one of its details (times ``scale``)."""

    def pick(results: Results) -> float | None:
        value = results.get("sections", {}).get(section, {}).get("medians", {}).get(key)
        return None if value is None else round(float(value) * scale, 3)

    return pick


def work_ratio(section: str, key: str) -> Callable[[Results], float | None]:
    """A real-work section's speed ratio (Conveyor ÷ the same work without it)."""

    def pick(results: Results) -> float | None:
        value = results.get("sections", {}).get(section, {}).get("ratios", {}).get(key)
        return None if value is None else float(value)

    return pick


def web_slowest_p95(section: str) -> Callable[[Results], float | None]:
    """The dashboard's slowest p95 in ms (None when a page did not answer: not measured)."""

    def pick(results: Results) -> float | None:
        web = results.get("sections", {}).get(section, {})
        slowest = web.get("slowest_p95_ms")
        if slowest is None or web.get("error"):
            return None
        return round(float(slowest), 1)

    return pick


@dataclass(frozen=True)
class Target:
    #: The section that measures it (a run without that section leaves the target out).
    section: str
    label: str
    goal: float
    ratio: Callable[[Results], float | None]
    #: False: the ratio must be at least ``goal`` (speed); True: at most (memory).
    at_most: bool = False
    #: What ``goal`` counts: a ratio, or a figure such as seconds.
    unit: str = "×"

    @property
    def wanted(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.goal:.2f}{self.unit}"

    def check(self, results: Results) -> dict[str, Any]:
        ratio = self.ratio(results)
        met = None if ratio is None else (ratio <= self.goal if self.at_most else ratio >= self.goal)
        return {
            "target": self.label,
            "wanted": self.wanted,
            "goal": self.goal,
            "ratio": ratio,
            "unit": self.unit,
            "met": met,
        }


TARGETS = [
    Target("noop", "no-op drain ÷ bare Dramatiq", 0.5, noop_ratio("dramatiq", "drain/s")),
    Target("noop", "no-op drain ÷ Celery prefork", 1.0, noop_ratio("celery_prefork", "drain/s")),
    Target("email", "emails/s ÷ plain smtplib loop (8 threads)", 0.5, work_ratio("email", "email")),
    Target(
        "images", "thumbnails/s ÷ plain Pillow pool, 1 process", 0.85, work_ratio("images", "thumbnails_p1")
    ),
    Target(
        "images", "thumbnails/s ÷ plain Pillow pool, 2 processes", 0.85, work_ratio("images", "thumbnails_p2")
    ),
    Target(
        "noop",
        "worker RSS ÷ Dramatiq (no-op queues only)",
        1.5,
        noop_ratio("dramatiq", "worker RSS"),
        at_most=True,
    ),
    Target(
        "noop",
        "client.enqueue ÷ Dramatiq send (confirms)",
        1.0,
        noop_ratio("dramatiq", "enqueue/s, one at a time"),
    ),
    Target(
        "noop",
        "enqueue_many ÷ raw pika, asynchronous confirms",
        0.5,
        noop_ratio("pika", "enqueue/s, Conveyor batched (vs their fastest)"),
    ),
    Target("metrics", "no-op drain with /metrics ÷ without (issue 17)", 0.97, work_ratio("metrics", "drain")),
    Target(
        "metrics",
        "no-op CPU per job without ÷ with the metrics hooks (issue 17)",
        0.97,
        work_ratio("metrics", "hooks"),
    ),
    Target(
        "outbox",
        "outbox enqueue_many(session=) ÷ enqueue_many, published (issue 19)",
        0.5,
        work_ratio("outbox", "throughput"),
    ),
    Target(
        "outbox",
        "outbox commit-to-publish p99 under load, in bulk (issue 19)",
        1.0,
        work_median("outbox", "bulk_commit_to_publish_p99_ms", scale=0.001),
        at_most=True,
        unit=" s",
    ),
    Target(
        "outbox",
        "outbox commit-to-publish p99 under load, one call a job (issue 19)",
        1.0,
        work_median("outbox", "calls_commit_to_publish_p99_ms", scale=0.001),
        at_most=True,
        unit=" s",
    ),
    Target(
        "web",
        "dashboard: the slowest page's p95 on 1M job rows (issue 18)",
        WEB_P95_MS,
        web_slowest_p95("web"),
        at_most=True,
        unit=" ms",
    ),
]


def check_all(results: Results) -> list[dict[str, Any]]:
    """Each target of the sections that ran: its label, what is wanted, the measured ratio and
    ``met`` (both None when not measured: a failed section, or a system left out)."""
    ran = results.get("sections", {})
    return [target.check(results) for target in TARGETS if target.section in ran]
