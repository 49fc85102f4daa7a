"""The table of transitions: what may move a job where, and the store's guards taken from it."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.dialects import sqlite

from jobs.status import (
    END_EVENTS,
    FINAL_STATUSES,
    STARTABLE_STATUSES,
    TRANSITIONS,
    AttemptOutcome,
    Event,
    JobStatus,
    allowed,
    sources,
    target,
)
from jobs.store import transitions
from jobs.store.delayed import HOLD
from jobs.store.steps import Step

S = JobStatus


def test_every_event_has_one_target_and_at_least_one_source() -> None:
    for event in Event:
        assert sources(event), event
        assert target(event) in JobStatus


def test_a_message_starts_only_a_waiting_job() -> None:
    assert {S.QUEUED, S.RETRYING} == STARTABLE_STATUSES
    assert allowed(S.RUNNING, Event.START) is None
    assert all(allowed(status, Event.START) is None for status in FINAL_STATUSES)


def test_only_a_running_job_is_taken_over_or_lost() -> None:
    assert sources(Event.TAKE_OVER) == {S.RUNNING}
    assert target(Event.TAKE_OVER) is S.RUNNING
    assert sources(Event.LOSE) == {S.RUNNING}
    assert target(Event.LOSE) is S.RETRYING


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (AttemptOutcome.SUCCEEDED, S.SUCCEEDED),
        (AttemptOutcome.RETRYING, S.RETRYING),
        (AttemptOutcome.FAILED, S.FAILED),
        (AttemptOutcome.CANCELLED, S.CANCELLED),
        (AttemptOutcome.INTERRUPTED, S.RETRYING),
    ],
)
def test_an_end_moves_a_running_or_retrying_job_by_its_outcome(
    outcome: AttemptOutcome, status: JobStatus
) -> None:
    event = END_EVENTS[outcome]
    assert allowed(S.RUNNING, event) is status
    # Recorded interrupted, or lost by the reconciler, and then ended after all.
    assert allowed(S.RETRYING, event) is status
    assert all(allowed(final, event) is None for final in FINAL_STATUSES)
    assert allowed(S.QUEUED, event) is None


def test_a_lost_run_is_not_an_end_a_worker_records() -> None:
    assert AttemptOutcome.LOST not in END_EVENTS


def test_an_admin_cancels_a_waiting_job_asks_a_running_one_and_reopens_a_failed_or_cancelled_one() -> None:
    assert sources(Event.CANCEL) == {S.QUEUED, S.RETRYING}
    assert target(Event.CANCEL) is S.CANCELLED
    assert sources(Event.REQUEST_CANCEL) == {S.RUNNING}
    assert target(Event.REQUEST_CANCEL) is S.RUNNING
    assert sources(Event.REOPEN) == {S.FAILED, S.CANCELLED}
    assert target(Event.REOPEN) is S.QUEUED


def test_a_dead_letter_requeues_or_purges_a_job_that_failed_or_never_ran() -> None:
    assert sources(Event.REQUEUE) == sources(Event.PURGE) == {S.FAILED, S.QUEUED, S.RETRYING}
    assert target(Event.REQUEUE) is S.QUEUED
    assert target(Event.PURGE) is S.FAILED


def test_a_succeeded_job_never_moves_again() -> None:
    assert not [pair for pair in TRANSITIONS if pair[0] is S.SUCCEEDED]


@pytest.mark.parametrize("event", [Event.START, Event.TAKE_OVER])
def test_a_start_statement_guards_with_the_table(event: Event) -> None:
    statement = transitions.START if event is Event.START else transitions.TAKE_OVER
    guard = {value for name, value in statement.constants.items() if value in set(JobStatus)}
    assert sources(event) <= guard
    assert "ON CONFLICT (id) DO UPDATE" in statement.sql
    assert "WHERE (jobs.status || '') IN" in statement.sql


_WHEN = re.compile(r"WHEN %\((\w+)\)s::VARCHAR THEN %\((\w+)\)s::VARCHAR")
#: The guard on a job's status, compared as an expression no index holds (``transitions._status_in``).
_GUARD = re.compile(r"\(jobs\.status \|\| ''\) IN \(((?:%\(\w+\)s::VARCHAR(?:, )?)+)\)")


@pytest.mark.parametrize(
    "statement",
    [transitions.END_JOB, transitions.END_BATCH.one, transitions.END_BATCH.many],
    ids=["single-row", "batch-of-one", "batch"],
)
def test_an_end_statement_moves_to_the_tables_target_under_its_guard(statement: Step) -> None:
    moves = {statement.constants[a]: statement.constants[b] for a, b in _WHEN.findall(statement.sql)}
    assert moves == {outcome.value: target(event).value for outcome, event in END_EVENTS.items()}
    (guard,) = _GUARD.findall(statement.sql)
    names = re.findall(r"%\((\w+)\)s", guard)
    assert {statement.constants[name] for name in names} == {s.value for s in sources(Event.SUCCEED)}
    assert all(sources(event) == sources(Event.SUCCEED) for event in END_EVENTS.values())


@pytest.mark.parametrize(
    "statement",
    [transitions.START, transitions.START_BATCH.one, transitions.START_BATCH.many],
    ids=["single-row", "batch-of-one", "batch"],
)
def test_the_batching_writer_starts_with_the_same_upsert(statement: Step) -> None:
    (guard,) = _GUARD.findall(statement.sql)
    names = re.findall(r"%\((\w+)\)s", guard)
    assert {statement.constants[name] for name in names} == {s.value for s in sources(Event.START)}
    assert "ON CONFLICT (id) DO UPDATE" in statement.sql


def test_a_batch_is_one_statement_over_arrays_and_one_job_goes_without() -> None:
    for batch in (transitions.START_BATCH, transitions.END_BATCH):
        assert batch.many.sql.count("unnest(") >= 1
        assert "unnest(" not in batch.one.sql
        assert batch.one.sql.startswith("WITH ")


def test_every_statement_compiles_for_sqlite_too() -> None:
    steps = [
        transitions.START,
        transitions.TAKE_OVER,
        transitions.OPEN_ATTEMPT,
        transitions.MARK_LOST,
        transitions.COUNT_LOST,
        transitions.CLOSE_ATTEMPT,
        transitions.END_JOB,
        HOLD,
    ]
    for step in steps:
        compiled = step.statement.compile(dialect=sqlite.dialect())  # type: ignore[attr-defined]
        assert "%(" not in str(compiled)
