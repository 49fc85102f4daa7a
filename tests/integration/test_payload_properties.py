"""Property: any payload is refused at enqueue with a ValueError naming the field, or is
accepted and comes back from the real PostgreSQL store as it was sent."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.errors import JobNotFound
from producers import Client, Job
from tests.unit.test_storable import hostile_text, json_trees, offending, refusal

pytestmark = pytest.mark.integration


def same(sent: Any, stored: Any) -> bool:
    """Equal as JSON values: ``jsonb`` keeps numbers as ``numeric``, so ``1e23`` may come back as
    the integer it names; numbers compare by value."""
    if isinstance(sent, bool) or isinstance(stored, bool):
        return sent is stored
    if isinstance(sent, int | float) and isinstance(stored, int | float):
        return sent == stored or float(sent) == float(stored)
    if isinstance(sent, list) and isinstance(stored, list):
        return len(sent) == len(stored) and all(same(a, b) for a, b in zip(sent, stored, strict=True))
    if isinstance(sent, dict) and isinstance(stored, dict):
        return sent.keys() == stored.keys() and all(same(sent[k], stored[k]) for k in sent)
    return bool(sent == stored)


def test_any_email_context_is_refused_naming_the_field_or_round_trips_through_the_store(
    client: Client,
) -> None:
    outcomes = {"refused": 0, "stored": 0}

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.dictionaries(hostile_text, json_trees, max_size=4))
    def enqueue_one(context: dict[str, Any]) -> None:
        sent: list[Job] = []
        error = refusal(
            lambda: sent.append(client.send_email(to="ada@example.com", template="welcome", context=context))
        )
        assert (error is not None) == offending({"context": context}), error
        if error is not None:
            assert error.startswith("email payload.context"), error
            outcomes["refused"] += 1
            return
        (job,) = sent
        try:
            stored = client.get(job.id).info.payload
        except JobNotFound:  # the row of a plain job is written beside its publish: read it again
            stored = client.get(job.id).info.payload
        assert same(context, stored["context"]), (context, stored["context"])
        outcomes["stored"] += 1

    enqueue_one()
    assert outcomes["refused"] > 0, outcomes
    assert outcomes["stored"] > 0, outcomes
