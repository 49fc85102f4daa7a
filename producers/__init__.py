"""Conveyor's client library: ``from producers import Client``."""

from jobs.delivery import DeliveryOptions
from jobs.errors import (
    JobFailed,
    JobNotFound,
    JobNotRecorded,
    PermanentError,
    ServiceUnavailable,
    SettingsError,
)
from jobs.settings import Settings
from jobs.status import JobStatus
from producers.client import Client
from producers.job import Job

__all__ = [
    "Client",
    "DeliveryOptions",
    "Job",
    "JobFailed",
    "JobNotFound",
    "JobNotRecorded",
    "JobStatus",
    "PermanentError",
    "ServiceUnavailable",
    "Settings",
    "SettingsError",
]
