"""delayed messages

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delayed_messages",
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=255), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_delayed_messages")),
    )
    op.create_index(op.f("ix_delayed_messages_due_at"), "delayed_messages", ["due_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_delayed_messages_due_at"), table_name="delayed_messages")
    op.drop_table("delayed_messages")
