"""Real-work sections: Conveyor and the same work done without it, side by side, medians of N.

A section (email, thumbnails, reports) names its comparisons, and measures each run both ways;
:func:`run_section` repeats the runs (each tried twice before it counts as failed), takes the
medians and the ratios. Every ratio is a *speed* ratio: above 1, Conveyor is the faster.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from bench.harness import Progress, measured_twice

#: The sides of a comparison, unless a section names its own.
SIDES = ("Conveyor", "without Conveyor")


@dataclass(frozen=True)
class Comparison:
    """One measured quantity, with Conveyor's figure and the baseline's stored as
    ``<key>.conveyor`` and ``<key>.baseline`` in each run's metrics."""

    key: str
    #: What is measured, e.g. "thumbnails/s, 2 processes".
    label: str
    unit: str
    #: How each side ran, for the report.
    conveyor: str
    baseline: str
    #: True for rates (per second), False for durations (seconds).
    higher_is_better: bool = True


class Section(Protocol):
    """What :func:`run_section` drives."""

    name: str
    title: str
    comparisons: list[Comparison]
    # Optional ``sides``: the two sides' names in the report (default :data:`SIDES`), for a
    # section that compares Conveyor with itself.

    def config(self) -> dict[str, Any]:
        """The section's sizes and settings, for the report."""

    def setup(self) -> None:
        """Once, before the first run (untimed: fixtures, seeding)."""

    def measure(self, run: int) -> dict[str, float]:
        """One run of every comparison: ``<key>.conveyor``, ``<key>.baseline`` and any details."""

    def close(self) -> None:
        """Release what setup acquired."""


def speed_ratio(comparison: Comparison, conveyor: float | None, baseline: float | None) -> float | None:
    """Conveyor's speed ÷ the baseline's (for durations: the baseline's time ÷ Conveyor's)."""
    if not conveyor or not baseline:
        return None
    ratio = conveyor / baseline if comparison.higher_is_better else baseline / conveyor
    return round(ratio, 3)


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    """The median of each metric over the successful runs."""
    values: dict[str, list[float]] = {}
    for run in runs:
        if run.get("error"):
            continue
        for key, value in run["metrics"].items():
            if isinstance(value, int | float):
                values.setdefault(key, []).append(float(value))
    return {key: statistics.median(vs) for key, vs in values.items()}


def run_section(section: Section, runs: int, log: Progress) -> dict[str, Any]:
    """Set up, measure ``runs`` times, close; the section's part of the results JSON."""
    started = time.monotonic()
    result: dict[str, Any] = {
        "title": section.title,
        "config": section.config(),
        "comparisons": [asdict(c) for c in section.comparisons],
        "sides": list(getattr(section, "sides", SIDES)),
        "runs": [],
    }
    log(f"{section.title}: setting up")
    try:
        section.setup()
        result["config"] = section.config()  # with what setup made (the source image's size…)
        for run in range(1, runs + 1):
            result["runs"].append(_one_run(section, run, runs, log))
    except KeyboardInterrupt:
        log(f"{section.name}: interrupted; reporting the runs done so far")
        result["interrupted"] = True
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        log(f"{section.name}: FAILED ({result['error']})")
    finally:
        section.close()
        meds = medians(result["runs"])
        result["medians"] = meds
        result["ratios"] = {
            c.key: speed_ratio(c, meds.get(f"{c.key}.conveyor"), meds.get(f"{c.key}.baseline"))
            for c in section.comparisons
        }
        result["duration_s"] = round(time.monotonic() - started, 1)
    return result


def _one_run(section: Section, run: int, runs: int, log: Progress) -> dict[str, Any]:
    log(f"{section.name} run {run}/{runs}")
    record = {
        "run": run,
        **measured_twice(section.name, lambda: section.measure(run), log, before_retry=lambda: time.sleep(2)),
    }
    for c in section.comparisons:
        ours, theirs = record["metrics"].get(f"{c.key}.conveyor"), record["metrics"].get(f"{c.key}.baseline")
        if ours is not None and theirs is not None:
            log(
                f"  {c.label}: Conveyor {ours:,.2f} {c.unit}, baseline {theirs:,.2f} {c.unit} "
                f"({speed_ratio(c, ours, theirs)}×)"
            )
    return record
