"""The bench's reads of the ``jobs`` table and of PostgreSQL's CPU, on the test database."""

from __future__ import annotations

import uuid

import pytest

from bench.harness import JOB_OUTCOMES_SQL, backend_cpu, job_outcomes, sql_connect
from jobs.store import Database
from jobs.store.jobs import JobStore, NewJob

pytestmark = pytest.mark.integration


def test_job_outcomes_counts_the_given_jobs_by_primary_key(db: Database, database_url: str) -> None:
    jobs = JobStore(db)
    ids = [str(uuid.uuid4()) for _ in range(4)]
    for job_id in ids:
        jobs.create(NewJob(id=job_id, kind="noop", queue="q.bench", payload={}, max_retries=0))
    with sql_connect(database_url) as sql:
        sql.execute(
            "UPDATE jobs SET status = 'succeeded', finished_at = to_timestamp(1000) WHERE id = %s", (ids[0],)
        )
        sql.execute(
            "UPDATE jobs SET status = 'succeeded', finished_at = to_timestamp(2000) WHERE id = %s", (ids[1],)
        )
        sql.execute(
            "UPDATE jobs SET status = 'failed', finished_at = to_timestamp(3000) WHERE id = %s", (ids[2],)
        )

        assert job_outcomes(sql, ids) == (2, 1, 3000.0)
        assert job_outcomes(sql, ids[:2]) == (2, 0, 2000.0)
        assert job_outcomes(sql, [ids[3]]) == (0, 0, None)
        sql.execute("SET enable_seqscan = off")  # a table this small would be scanned anyway
        plan = " ".join(row[0] for row in sql.execute(f"EXPLAIN {JOB_OUTCOMES_SQL}", (ids,)).fetchall())
    # The ids are the primary key's condition; ``id::text = ANY(…)`` would read every row (or
    # every index entry) and filter it.
    assert "Index Cond: (id = ANY" in plan


def test_backend_cpu_reads_the_backends_of_this_database_only(database_url: str) -> None:
    with sql_connect(database_url) as sql, sql_connect(database_url) as other:
        other_pid = other.execute("SELECT pg_backend_pid()").fetchone()
        own_pid = sql.execute("SELECT pg_backend_pid()").fetchone()
        other.execute("SELECT count(*) FROM generate_series(1, 300000)")
        found = backend_cpu(sql)
    assert other_pid is not None
    assert own_pid is not None
    assert other_pid[0] in found
    assert own_pid[0] not in found  # the reading connection leaves itself out
    assert all(seconds >= 0 for seconds in found.values())
