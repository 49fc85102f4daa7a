"""paused queues (issue 18)

``queue_pauses``: one row per paused queue of a namespace. Workers read the set about once a
second and stop fetching from those queues; the messages stay in RabbitMQ. Deleting the row
resumes the queue.

``ix_jobs_finished_at_status``: the dashboard's overview counts finished jobs per minute by
status, and their run time and queue wait, from this index alone (an index-only scan: the
status, start, creation, attempt count and queue are in it), also on millions of rows.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "queue_pauses",
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("queue", sa.String(length=255), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paused_by", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "queue", name=op.f("pk_queue_pauses")),
    )
    op.create_index(
        op.f("ix_jobs_finished_at_status"),
        "jobs",
        ["finished_at", "status"],
        unique=False,
        postgresql_include=["started_at", "created_at", "attempts", "queue"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_finished_at_status"), table_name="jobs")
    op.drop_table("queue_pauses")
