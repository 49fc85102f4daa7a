"""encryption at rest (no schema change)

Encryption at rest stores sealed values in the same columns: a JSONB envelope
``{"$enc": "v1", "kid": …}`` in JSON columns, a ``$enc:v1:<kid>:`` prefix in text columns and a
magic header in byte columns (``jobs/crypto.py``). This revision only marks the first schema
version whose readers open them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
