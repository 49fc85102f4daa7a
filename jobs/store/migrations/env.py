"""Alembic environment: runs on the connection that ``jobs.store.migrate`` hands over."""

from __future__ import annotations

from alembic import context

from jobs.store.migrate import include_object
from jobs.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_object=include_object,
)
with context.begin_transaction():
    context.run_migrations()
