"""the dashboard's job search (issue 18)

- ``ix_jobs_payload``: GIN with ``jsonb_path_ops`` on ``jobs.payload``, so that a payload search
  (``payload @> '{"to": "ada@example.com"}'``) reads the index, not the table. PostgreSQL only:
  the demo's SQLite has no such index and checks containment row by row.
- ``ix_jobs_queue_created_at``: the jobs of one queue, newest first (keyset pagination).
- ``ix_jobs_errors_created_at``: the jobs that have an error, newest first (a partial index,
  PostgreSQL only): the error search walks these rows, not every job.

Error text itself has no index: ``ILIKE '%…%'`` needs ``pg_trgm``, an extension a managed
database may not offer, so the dashboard bounds that search instead (``jobs/store/search.py``).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_jobs_queue_created_at"), "jobs", ["queue", "created_at"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            op.f("ix_jobs_payload"),
            "jobs",
            ["payload"],
            unique=False,
            postgresql_using="gin",
            postgresql_ops={"payload": "jsonb_path_ops"},
        )
        op.create_index(
            "ix_jobs_errors_created_at",
            "jobs",
            ["created_at", "id"],
            unique=False,
            postgresql_where=sa.text("error IS NOT NULL"),
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_jobs_errors_created_at", table_name="jobs")
        op.drop_index(op.f("ix_jobs_payload"), table_name="jobs")
    op.drop_index(op.f("ix_jobs_queue_created_at"), table_name="jobs")
