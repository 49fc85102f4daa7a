"""The partial indexes of ``jobs`` (migration 0018) on real PostgreSQL: each holds only the rows
whose column is set, and the queries that read it still use it (their comparison implies the
index's predicate)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import ARRAY, Connection, LargeBinary, bindparam, func, select, text

from jobs.store import Database
from jobs.store.tables import Jobs

pytestmark = pytest.mark.integration

PARTIAL = {
    "ix_jobs_finished_at_status": "finished_at IS NOT NULL",
    "ix_jobs_parent_id": "parent_id IS NOT NULL",
    "ix_jobs_subjects": "subjects IS NOT NULL",
}


@pytest.fixture
def connection(db: Database) -> Iterator[Connection]:
    with db.engine.connect() as connection:
        # The test's tables are small: without this the planner would read them whole, which
        # would say nothing about whether it *can* use an index.
        connection.execute(text("SET enable_seqscan = off"))
        yield connection
        connection.rollback()


def plan(connection: Connection, query: Any) -> str:
    compiled = query.compile(connection)
    rows = connection.exec_driver_sql(f"EXPLAIN {compiled.string}", compiled.params).all()
    return "\n".join(row[0] for row in rows)


def test_the_redundant_index_is_gone_and_three_are_partial(connection: Connection) -> None:
    definitions = dict(
        connection.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'jobs'")).all()
    )

    assert "ix_jobs_finished_at" not in definitions  # ix_jobs_finished_at_status leads with it
    for name, predicate in PARTIAL.items():
        assert definitions[name].endswith(f"WHERE ({predicate})"), definitions[name]


def test_a_jobs_follow_ups_are_found_through_the_parent_index(connection: Connection) -> None:
    query = select(Jobs.id).where(Jobs.parent_id == str(uuid.uuid4())).order_by(Jobs.created_at)

    shown = plan(connection, query)

    assert "parent_id_idx" in shown or "ix_jobs_parent_id" in shown, shown
    assert "Seq Scan" not in shown, shown


def test_a_window_of_finished_jobs_is_read_from_the_finished_index(connection: Connection) -> None:
    since = datetime.now(UTC) - timedelta(hours=1)
    query = select(Jobs.status, func.count()).where(Jobs.finished_at >= since).group_by(Jobs.status)

    shown = plan(connection, query)

    assert "finished_at_status" in shown, shown
    assert "Seq Scan" not in shown, shown


def test_a_subjects_jobs_are_found_through_the_subjects_index(connection: Connection) -> None:
    wanted = bindparam("hashes", [b"\x01" * 32], type_=ARRAY(LargeBinary()))
    query = select(Jobs.id).where(Jobs.subjects.op("&&")(wanted))

    shown = plan(connection, query)

    assert "subjects_idx" in shown or "ix_jobs_subjects" in shown, shown
    assert "Seq Scan" not in shown, shown
