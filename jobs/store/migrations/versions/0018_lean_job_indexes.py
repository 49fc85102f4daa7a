"""fewer index entries per job: one redundant index of ``jobs`` dropped, three made partial (issue 14)

Every job's row is inserted once and updated once at its end; neither write is a HOT update, so
each writes an entry into every index of ``jobs`` whose predicate the row meets.

- ``ix_jobs_finished_at`` is dropped: ``ix_jobs_finished_at_status`` leads with the same column,
  and serves every query that read it (windows of ``finished_at``, prune).
- ``ix_jobs_finished_at_status``, ``ix_jobs_parent_id`` and ``ix_jobs_subjects`` hold only rows
  whose column is set (``… IS NOT NULL``). Every query that reads them compares that column
  (``finished_at >= …``, ``parent_id = …``, ``subjects && …``), which implies the predicate, so
  the planner still uses them. A waiting job (no end), a job with no parent (most) and a job
  enqueued without encryption keys (no subject hashes) no longer have an entry in them.

A new job's row goes into 7 indexes instead of 11, and its end into 8 instead of 11.

On PostgreSQL the three indexes are built again on every partition of ``jobs``: writes to
``jobs`` wait while they build (``docs/operations/upgrades.md``).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Covered by ``ix_jobs_finished_at_status``, which leads with the same column.
_REDUNDANT = "ix_jobs_finished_at"
#: name, columns, the column that must be set, options (PostgreSQL).
_PARTIAL: list[tuple[str, list[str], str, dict[str, Any]]] = [
    (
        "ix_jobs_finished_at_status",
        ["finished_at", "status"],
        "finished_at",
        {"postgresql_include": ["started_at", "created_at", "attempts", "queue"]},
    ),
    ("ix_jobs_parent_id", ["parent_id"], "parent_id", {}),
    ("ix_jobs_subjects", ["subjects"], "subjects", {"postgresql_using": "gin"}),
]


def upgrade() -> None:
    op.drop_index(_REDUNDANT, table_name="jobs")
    for name, columns, column, options in _PARTIAL:
        op.drop_index(name, table_name="jobs")
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, "jobs", columns, postgresql_where=where, sqlite_where=where, **options)


def downgrade() -> None:
    for name, columns, _, options in _PARTIAL:
        op.drop_index(name, table_name="jobs")
        op.create_index(name, "jobs", columns, **options)
    op.create_index(_REDUNDANT, "jobs", ["finished_at"])
