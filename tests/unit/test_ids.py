"""Job ids: UUIDv7 in the text form ``uuid.UUID`` gives, made one at a time or a batch at once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from jobs.ids import id_floor, id_time, new_job_id, new_job_ids


def _checked(value: str) -> uuid.UUID:
    parsed = uuid.UUID(value)
    assert str(parsed) == value  # lower-case, dashed: the same text as uuid.UUID's
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    return parsed


def test_an_id_is_a_uuid7_of_now() -> None:
    before = datetime.now(UTC)
    made = id_time(new_job_id())
    assert made is not None
    assert before - timedelta(milliseconds=1) <= made <= datetime.now(UTC)
    _checked(new_job_id())


def test_an_id_of_a_moment_sorts_with_that_moment() -> None:
    moment = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)
    made = new_job_id(moment)
    _checked(made)
    assert id_time(made) == moment
    assert id_floor(moment) <= made < id_floor(moment + timedelta(milliseconds=1))


def test_a_batch_of_ids_is_distinct_uuid7_of_now() -> None:
    before = id_floor(datetime.now(UTC) - timedelta(milliseconds=1))
    ids = new_job_ids(2000)
    assert len(ids) == 2000
    assert len(set(ids)) == 2000
    assert len({_checked(value).int & ((1 << 62) - 1) for value in ids}) == 2000  # random tails differ
    assert all(before <= value <= id_floor(datetime.now(UTC) + timedelta(milliseconds=1)) for value in ids)
    assert new_job_ids(0) == []
