"""``jobs.context.report_progress``: what a job's code calls to record how far it is."""

from __future__ import annotations

import math

import pytest

from jobs import context
from jobs.context import JobContext, report_progress, set_current_job
from jobs.errors import JobCancelled


def _context(written: list[int], *, cancelled: bool = False) -> JobContext:
    return JobContext(
        job_id="j1", kind="noop", attempt=1, progress_sink=written.append, cancel_check=lambda: cancelled
    )


def test_a_change_is_written_then_repeats_and_quick_steps_are_not() -> None:
    written: list[int] = []
    ctx = _context(written)
    ctx.report_progress(10)
    ctx.report_progress(10.9)  # rounds down to the same 10
    ctx.report_progress(20)  # within PROGRESS_EVERY of the last write
    ctx.report_progress(100)  # the end is always written
    assert written == [10, 100]


def test_values_are_clamped_to_0_100(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "PROGRESS_EVERY", 0.0)
    written: list[int] = []
    ctx = _context(written)
    for value in (-5, 42.7, 250):
        ctx.report_progress(value)
    assert written == [0, 42, 100]


@pytest.mark.parametrize("bad", [math.nan, math.inf, True, "50", None])
def test_a_value_that_is_not_a_finite_number_is_refused(bad: object) -> None:
    written: list[int] = []
    with pytest.raises(ValueError, match="progress must be a finite number"):
        _context(written).report_progress(bad)  # type: ignore[arg-type]
    assert written == []


def test_progress_is_a_cooperative_stop_point() -> None:
    written: list[int] = []
    with pytest.raises(JobCancelled):
        _context(written, cancelled=True).report_progress(50)
    assert written == []


def test_the_module_function_reports_for_the_current_job_and_is_a_no_op_outside_one() -> None:
    report_progress(30)  # no job on this thread: nothing to write, no error
    written: list[int] = []
    set_current_job(_context(written))
    try:
        report_progress(30)
    finally:
        set_current_job(None)
    assert written == [30]
