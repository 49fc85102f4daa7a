"""jobs partitioned by time on PostgreSQL; idempotency keys in a table of their own (issue 19)

- ``job_keys``: one row per job enqueued with an idempotency key, primary key ``(idempotency_key,
  kind, queue)``. It replaces the unique constraint of ``jobs``: a unique constraint of a
  partitioned table must hold its partition key, and a key must be unique across partitions.
  Filled from the existing rows.
- PostgreSQL only: ``jobs`` becomes partitioned by ``RANGE (id)`` (``jobs/store/partitions.py``).
  The old table is attached as the ``DEFAULT`` partition, renamed ``jobs_default``, without a
  copy: its rows age out through row-by-row retention. Day partitions are made from yesterday to
  ``AHEAD_DAYS`` ahead; the few old rows whose random ids fall in those days move into them. The
  foreign keys to ``jobs`` are made again on the partitioned table (each one scans its table
  once to validate it).
- ``job_attempts`` loses its foreign key to ``jobs``: checked against the partitioned table, it
  was planned anew for every attempt row (every job writes one), and cost more PostgreSQL CPU
  than the rest of a no-op job's end. A trigger deletes a job's attempts with it instead.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

from jobs.store.partitions import AHEAD_DAYS, DEFAULT, day_bounds, partition_name

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNIQUE_KEY = "uq_jobs_idempotency_key_kind_queue"
_ATTEMPTS_FOREIGN_KEY = ("fk_job_attempts_job_id_jobs", "job_attempts", "job_id", "CASCADE")
#: The other foreign keys to ``jobs``: (name, table, column, on delete).
_FOREIGN_KEYS = [
    ("fk_artifacts_job_id_jobs", "artifacts", "job_id", "SET NULL"),
    ("fk_email_deliveries_job_id_jobs", "email_deliveries", "job_id", "CASCADE"),
    ("fk_outbox_job_id_jobs", "outbox", "job_id", "CASCADE"),
    ("fk_jobs_parent_id_jobs", "jobs", "parent_id", "SET NULL"),
]
#: A job's attempts deleted with it: once per statement on PostgreSQL (its deleted rows as a
#: transition table), per row on SQLite.
_DELETE_ATTEMPTS = {
    "postgresql": [
        """CREATE FUNCTION conveyor_jobs_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_attempts a USING deleted_jobs d WHERE a.job_id = d.id;
    RETURN NULL;
END $$""",
        "CREATE TRIGGER jobs_deleted AFTER DELETE ON jobs REFERENCING OLD TABLE AS deleted_jobs "
        "FOR EACH STATEMENT EXECUTE FUNCTION conveyor_jobs_deleted()",
    ],
    "sqlite": [
        "CREATE TRIGGER jobs_deleted AFTER DELETE ON jobs FOR EACH ROW "
        "BEGIN DELETE FROM job_attempts WHERE job_id = OLD.id; END"
    ],
}
_DROP_DELETE_ATTEMPTS = {
    "postgresql": ["DROP TRIGGER jobs_deleted ON jobs", "DROP FUNCTION conveyor_jobs_deleted()"],
    "sqlite": ["DROP TRIGGER jobs_deleted"],
}
_KEYS_FOREIGN_KEY = ("fk_job_keys_job_id_jobs", "job_keys", "job_id", "CASCADE")
#: The indexes of ``jobs`` as of 0016 (the primary key and the unique key aside).
_INDEXES = {
    "ix_jobs_created_at": "(created_at)",
    "ix_jobs_kind_created_at": "(kind, created_at)",
    "ix_jobs_queue_status": "(queue, status)",
    "ix_jobs_status_created_at": "(status, created_at)",
    "ix_jobs_parent_id": "(parent_id)",
    "ix_jobs_finished_at": "(finished_at)",
    "ix_jobs_subjects": "USING gin (subjects)",
    "ix_jobs_queue_created_at": "(queue, created_at)",
    "ix_jobs_payload": "USING gin (payload jsonb_path_ops)",
    "ix_jobs_errors_created_at": "(created_at, id) WHERE error IS NOT NULL",
    "ix_jobs_finished_at_status": "(finished_at, status) INCLUDE (started_at, created_at, attempts, queue)",
    "ix_jobs_dead_letters": "(queue, finished_at) WHERE dead_fingerprint IS NOT NULL",
}


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "job_keys",
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=255), nullable=False),
        sa.Column("job_id", sa.Uuid(as_uuid=False), nullable=False),
        # On PostgreSQL, the foreign key comes once ``jobs`` is partitioned.
        *([] if postgresql else [sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE")]),
        sa.PrimaryKeyConstraint("idempotency_key", "kind", "queue", name=op.f("pk_job_keys")),
    )
    op.create_index(op.f("ix_job_keys_job_id"), "job_keys", ["job_id"], unique=False)
    op.execute(
        "INSERT INTO job_keys (idempotency_key, kind, queue, job_id) "
        "SELECT idempotency_key, kind, queue, id FROM jobs WHERE idempotency_key IS NOT NULL"
    )
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(_UNIQUE_KEY, type_="unique")
    with op.batch_alter_table("job_attempts") as batch:
        batch.drop_constraint(_ATTEMPTS_FOREIGN_KEY[0], type_="foreignkey")
    if postgresql:
        _partition()
    for statement in _DELETE_ATTEMPTS["postgresql" if postgresql else "sqlite"]:
        op.execute(statement)


def _partition() -> None:
    for name, table, _, _ in _FOREIGN_KEYS:
        op.drop_constraint(name, table, type_="foreignkey")
    op.execute(f"ALTER TABLE jobs RENAME TO {DEFAULT}")
    op.execute(f"ALTER TABLE {DEFAULT} RENAME CONSTRAINT pk_jobs TO {DEFAULT}_pkey")
    for name in _INDEXES:
        op.execute(f"ALTER INDEX {name} RENAME TO {DEFAULT}_{name.removeprefix('ix_jobs_')}")
    op.execute(f"CREATE TABLE jobs (LIKE {DEFAULT} INCLUDING DEFAULTS) PARTITION BY RANGE (id)")
    op.execute("ALTER TABLE jobs ADD CONSTRAINT pk_jobs PRIMARY KEY (id)")
    today = datetime.now(UTC).date()
    days = [today + timedelta(days=offset) for offset in range(-1, AHEAD_DAYS + 1)]
    for day in days:
        low, high = day_bounds(day)
        bounds = f"FROM ('{low}') TO ('{high}')"
        op.execute(f"CREATE TABLE {partition_name(day)} PARTITION OF jobs FOR VALUES {bounds}")
    # Old rows whose random ids fall in those days: the default partition may not hold them.
    moved = f"id >= '{day_bounds(days[0])[0]}' AND id < '{day_bounds(days[-1])[1]}'"
    op.execute(f"INSERT INTO jobs SELECT * FROM {DEFAULT} WHERE {moved}")
    op.execute(f"DELETE FROM {DEFAULT} WHERE {moved}")
    op.execute(f"ALTER TABLE jobs ATTACH PARTITION {DEFAULT} DEFAULT")
    _create_indexes()  # the default partition's own indexes are attached, not built again
    for foreign_key in [*_FOREIGN_KEYS, _KEYS_FOREIGN_KEY]:
        _create_foreign_key(*foreign_key)


def _create_indexes() -> None:
    for name, definition in _INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON jobs {definition}")


def _create_foreign_key(name: str, table: str, column: str, on_delete: str) -> None:
    op.execute(
        f"ALTER TABLE {table} ADD CONSTRAINT {name} "
        f"FOREIGN KEY ({column}) REFERENCES jobs (id) ON DELETE {on_delete}"
    )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in _DROP_DELETE_ATTEMPTS["postgresql" if dialect == "postgresql" else "sqlite"]:
        op.execute(statement)
    if dialect == "postgresql":
        _unpartition()
    with op.batch_alter_table("job_attempts") as batch:
        name, _, column, on_delete = _ATTEMPTS_FOREIGN_KEY
        batch.create_foreign_key(name, "jobs", [column], ["id"], ondelete=on_delete)
    with op.batch_alter_table("jobs") as batch:
        batch.create_unique_constraint(_UNIQUE_KEY, ["idempotency_key", "kind", "queue"])
    op.drop_index(op.f("ix_job_keys_job_id"), table_name="job_keys")
    op.drop_table("job_keys")


def _unpartition() -> None:
    """Back to one plain table: a copy of every row."""
    for name, table, _, _ in [*_FOREIGN_KEYS, _KEYS_FOREIGN_KEY]:
        op.drop_constraint(name, table, type_="foreignkey")
    op.execute("CREATE TABLE jobs_plain (LIKE jobs INCLUDING DEFAULTS)")
    op.execute("INSERT INTO jobs_plain SELECT * FROM jobs")
    op.execute("DROP TABLE jobs")
    op.execute("ALTER TABLE jobs_plain RENAME TO jobs")
    op.execute("ALTER TABLE jobs ADD CONSTRAINT pk_jobs PRIMARY KEY (id)")
    _create_indexes()
    for foreign_key in _FOREIGN_KEYS:
        _create_foreign_key(*foreign_key)
