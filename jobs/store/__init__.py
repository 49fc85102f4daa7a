"""The job store: PostgreSQL (or SQLite for the demo) through SQLAlchemy 2, migrated by Alembic."""

from jobs.store.attempts import AttemptEnd, AttemptStore, SeenMessage, WorkerIdentity
from jobs.store.database import Database
from jobs.store.jobs import AttemptInfo, JobInfo, JobStore, NewJob

__all__ = [
    "AttemptEnd",
    "AttemptInfo",
    "AttemptStore",
    "Database",
    "JobInfo",
    "JobStore",
    "NewJob",
    "SeenMessage",
    "WorkerIdentity",
]
