"""job parents

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite (the demo's store) cannot ALTER constraints in place.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("parent_id", sa.Uuid(as_uuid=False), nullable=True))
        batch.create_index(batch.f("ix_jobs_parent_id"), ["parent_id"], unique=False)
        batch.create_foreign_key(
            batch.f("fk_jobs_parent_id_jobs"), "jobs", ["parent_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(batch.f("fk_jobs_parent_id_jobs"), type_="foreignkey")
        batch.drop_index(batch.f("ix_jobs_parent_id"))
        batch.drop_column("parent_id")
