"""audit and subjects: the audit log, GDPR subject hashes, the installation secret

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_HASHES = sa.JSON().with_variant(postgresql.ARRAY(sa.LargeBinary()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=True),
        sa.Column("job_ids", _JSON, nullable=True),
        sa.Column("selection", _JSON, nullable=True),
        sa.Column("details", _JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_namespace_at"), "audit_log", ["namespace", "at"], unique=False)
    op.create_index(op.f("ix_audit_log_action_at"), "audit_log", ["action", "at"], unique=False)
    installation = op.create_table(
        "installation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_installation")),
    )
    # The key of the audit log's subject hashes: random per installation, never shown.
    op.bulk_insert(installation, [{"id": 1, "secret": os.urandom(32), "created_at": datetime.now(UTC)}])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("subjects", _HASHES, nullable=True))
    # GIN on PostgreSQL: `subjects && ARRAY[...]` finds a subject's jobs without a scan.
    op.create_index(op.f("ix_jobs_subjects"), "jobs", ["subjects"], unique=False, postgresql_using="gin")


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_subjects"), table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("subjects")
    op.drop_table("installation")
    op.drop_index(op.f("ix_audit_log_action_at"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_namespace_at"), table_name="audit_log")
    op.drop_table("audit_log")
