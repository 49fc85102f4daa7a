"""trace ids of attempts

``job_attempts.trace_id``: the W3C trace id (32 hex digits) an attempt ran under, written with
the attempt's start when its message carried trace context (``jobs/tracing.py``). Nullable and
without a default, so adding it rewrites no row.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("job_attempts", sa.Column("trace_id", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_attempts") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("trace_id")
