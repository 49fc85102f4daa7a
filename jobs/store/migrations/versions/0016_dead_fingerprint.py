"""the dead letters' error fingerprint on their job rows (issue 18, the dead-letters page)

- ``jobs.dead_fingerprint``: the key of the error fingerprint (``jobs.fingerprint``) of a job whose
  message is in its dead-letter queue, written by the worker with the failed end, cleared when
  the message is requeued or purged. Nullable, no default: adding it rewrites no row.
- ``ix_jobs_dead_letters``: a partial index of those rows only, per queue and end, so that the
  dashboard groups and counts the dead letters without reading the other jobs.

Dead letters of before this migration have no fingerprint on their rows: the dashboard counts
them as the difference from RabbitMQ's count, and its exact view (``/dead?source=queues``) lists them.

Numbered 0016 (not 0015) so that it cannot clash with another branch's next migration.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DEAD = "dead_fingerprint IS NOT NULL"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("dead_fingerprint", sa.String(length=16), nullable=True))
    op.create_index(
        "ix_jobs_dead_letters",
        "jobs",
        ["queue", "finished_at"],
        unique=False,
        postgresql_where=sa.text(_DEAD),
        sqlite_where=sa.text(_DEAD),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_dead_letters", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("dead_fingerprint")
