"""The job store: PostgreSQL (or SQLite for the demo) through SQLAlchemy 2, migrated by Alembic."""

from jobs.store.attempts import AttemptEnd, AttemptStore, SeenMessage, StartedAttempt, WorkerIdentity
from jobs.store.database import Database
from jobs.store.jobs import AttemptInfo, JobInfo, JobSelection, JobStore, NewJob

__all__ = [
    "AttemptEnd",
    "AttemptInfo",
    "AttemptStore",
    "Database",
    "JobInfo",
    "JobSelection",
    "JobStore",
    "NewJob",
    "SeenMessage",
    "StartedAttempt",
    "WorkerIdentity",
]
