"""``reference/statuses.md``: job statuses and the moves between them (``jobs.status.TRANSITIONS``),
attempt outcomes, and the states of an email delivery."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import jobs.status
import jobs.store.deliveries
from conveyor_docs.comments import doc_comments, markdown_of_rst
from conveyor_docs.settings_page import MissingDescription
from jobs.status import END_EVENTS, TRANSITIONS, AttemptOutcome, Event, JobStatus


def _members(kind: type[Enum], source: Path) -> dict[str, str]:
    """Value → the ``#:`` description of each member of the enum ``kind`` ("" when none)."""
    described = doc_comments(source, kind.__name__)
    return {member.value: markdown_of_rst(described.get(member.name, "")) for member in kind}


def _event_meanings() -> dict[Event, str]:
    described = _members(Event, Path(jobs.status.__file__))
    outcome_of = {event: outcome for outcome, event in END_EVENTS.items()}
    meanings = {}
    for event in Event:
        text = described[event.value]
        if event in outcome_of:  # the ends share one comment: say which end each is
            text = f"An attempt ended `{outcome_of[event].value}`."
        if not text:
            raise MissingDescription(f"jobs/status.py: Event.{event.name} has no `#:` description")
        meanings[event] = text
    return meanings


def _diagram() -> list[str]:
    lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {JobStatus.QUEUED.value}"]
    edges: dict[tuple[str, str], list[str]] = {}
    for (source, event), to in TRANSITIONS.items():
        edges.setdefault((source.value, to.value), []).append(event.value)
    lines += [f"    {a} --> {b}: {', '.join(events)}" for (a, b), events in edges.items()]
    lines += [f"    {status.value} --> [*]" for status in JobStatus if status.is_final]
    return [*lines, "```"]


def _statuses() -> list[str]:
    meanings = _members(JobStatus, Path(jobs.status.__file__))
    missing = [value for value, text in meanings.items() if not text]
    if missing:
        raise MissingDescription(f"jobs/status.py: statuses without a `#:` description: {', '.join(missing)}")
    lines = ["| status | final | meaning |", "|---|---|---|"]
    lines += [
        f"| `{s.value}` {{ #{s.value} }} | {'yes' if s.is_final else 'no'} | {meanings[s.value]} |"
        for s in JobStatus
    ]
    return lines


def _transitions() -> list[str]:
    meanings = _event_meanings()
    lines = ["| event | from | to | what happens |", "|---|---|---|---|"]
    for event in Event:
        sources = [source.value for source in JobStatus if (source, event) in TRANSITIONS]
        (to,) = {TRANSITIONS[(source, event)].value for source in JobStatus if (source, event) in TRANSITIONS}
        froms = ", ".join(f"`{source}`" for source in sources)
        lines.append(f"| `{event.value}` | {froms} | `{to}` | {meanings[event]} |")
    return lines


def _outcomes() -> list[str]:
    described = _members(AttemptOutcome, Path(jobs.status.__file__))
    described[AttemptOutcome.SUCCEEDED.value] = described[AttemptOutcome.SUCCEEDED.value] or "Succeeded."
    # A worker records the ends; a lost run is recorded by whoever notices the loss.
    events = {**END_EVENTS, AttemptOutcome.LOST: Event.LOSE}
    lines = ["| outcome | meaning | the job's event |", "|---|---|---|"]
    for outcome in AttemptOutcome:
        event = events[outcome]
        lines.append(f"| `{outcome.value}` | {described[outcome.value]} | `{event.value}` |")
    return lines


def _deliveries() -> list[str]:
    described = _members(jobs.store.deliveries.DeliveryState, Path(jobs.store.deliveries.__file__))
    lines = ["| state | meaning |", "|---|---|"]
    for value, text in described.items():
        if not text:
            raise MissingDescription(f"DeliveryState {value!r} has no `#:` description")
        lines.append(f"| `{value}` | {text} |")
    return lines


def statuses_page() -> str:
    """The page's Markdown."""
    lines = [
        "# Job statuses",
        "",
        "This page is for anyone who reads job rows, `conveyor jobs` output or the `jobs` table: the "
        "statuses a job goes through, the moves allowed between them, how one attempt can end, and "
        "the states of an email delivery. It is generated from `jobs/status.py` (the one table every "
        "status change in the store takes its guard and target from) when the site is built.",
        "",
        "## Statuses { #statuses }",
        "",
        *_statuses(),
        "",
        "## Transitions { #transitions }",
        "",
        "A move not listed here does not happen: the store's statements take their `WHERE status IN "
        "…` guard from this table, so a stale worker or a second admin finds the row already moved "
        "and changes nothing.",
        "",
        *_diagram(),
        "",
        *_transitions(),
        "",
        "## Attempt outcomes { #attempt-outcomes }",
        "",
        "Each run of a job is a row of `job_attempts` ([schema](schema.md#job_attempts)); its "
        "`outcome` is one of these, and recording it moves the job by the event shown.",
        "",
        *_outcomes(),
        "",
        "## Email deliveries { #email-deliveries }",
        "",
        "An email job records its message in `email_deliveries` ([schema](schema.md#email_deliveries)) "
        "before and after it is sent, so that a retry or a redelivery never sends it twice.",
        "",
        *_deliveries(),
        "",
    ]
    return "\n".join(lines)
