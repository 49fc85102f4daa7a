"""idempotency scope: an idempotency key is unique per namespace and kind, not across them

Before this revision the key was unique over the whole table, so a job of another kind, or of
another namespace sharing the database, silently got the first job back. The queue names the
namespace (``<namespace>.<suffix>``) and, with the kind, the scope: this revision puts the
unique constraint on (idempotency_key, kind, queue).

Downgrade restores the global constraint; it fails if a key has since been used in two scopes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(batch.f("uq_jobs_idempotency_key"), type_="unique")
        batch.create_unique_constraint(
            batch.f("uq_jobs_idempotency_key_kind_queue"), ["idempotency_key", "kind", "queue"]
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(batch.f("uq_jobs_idempotency_key_kind_queue"), type_="unique")
        batch.create_unique_constraint(batch.f("uq_jobs_idempotency_key"), ["idempotency_key"])
