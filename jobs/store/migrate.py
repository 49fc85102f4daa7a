"""``conveyor db upgrade``: create the database when it is missing, then apply Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from jobs.defaults import DEFAULT_CONNECT_TIMEOUT
from jobs.errors import ServiceUnavailable
from jobs.settings import mask_url
from jobs.store.database import Database
from jobs.store.partitions import PartitionStore, is_partition
from jobs.tls import explained

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Replicas started together all run `db upgrade`; one migrates, the others wait.
_MIGRATION_LOCK_ID = 0x636F6E76  # "conv"


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """What autogenerate compares with the models: not the partitions of ``jobs``, nor the copies
    of each foreign key to ``jobs`` that PostgreSQL keeps for every partition."""
    if type_ == "table":
        return not is_partition(name or "")
    if type_ == "foreign_key_constraint" and reflected:
        return not is_partition(obj.referred_table.name)
    return True


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` when it does not exist.

    Returns:
        Whether it was created.

    Raises:
        ServiceUnavailable: the server cannot be reached.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            path.parent.mkdir(parents=True, exist_ok=True)
            return not path.exists()
        return False
    name = parsed.database or "postgres"
    maintenance = parsed.set(drivername="postgresql+psycopg", database="postgres")
    engine = create_engine(
        maintenance,
        isolation_level="AUTOCOMMIT",
        hide_parameters=True,
        connect_args={"connect_timeout": DEFAULT_CONNECT_TIMEOUT},
    )
    try:
        with engine.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
            if exists:
                return False
            quoted = connection.dialect.identifier_preparer.quote(name)
            connection.execute(text(f"CREATE DATABASE {quoted}"))
            return True
    except OperationalError as exc:
        raise ServiceUnavailable("PostgreSQL", mask_url(url), explained(exc.orig or exc)) from None
    finally:
        engine.dispose()


def upgrade(db: Database, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate the schema to ``revision``.

    Returns:
        The revisions before and after.
    """
    try:
        with db.engine.begin() as connection:
            if db.dialect == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            before = MigrationContext.configure(connection).get_current_revision()
            command.upgrade(alembic_config(connection), revision)
            after = MigrationContext.configure(connection).get_current_revision()
    except OperationalError as exc:
        raise db.unavailable(exc) from None
    if after == head_revision():
        PartitionStore(db).ensure(datetime.now(UTC).date())
    return before, after
