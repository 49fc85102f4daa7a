"""Conveyor's core, shared by producers and workers: settings, kinds, broker, store, middleware.

Every exception Conveyor raises on purpose is importable from here (defined in ``jobs.errors``).
"""

from jobs.errors import (
    ArtifactNotFound,
    BenchError,
    ConveyorError,
    DeadLetterNotFound,
    DecryptionError,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobNotRecorded,
    PermanentError,
    RegistryUnavailable,
    SchemaMissing,
    ServiceUnavailable,
    SettingsError,
    SignatureError,
    StoreConflict,
    StoreRefused,
    TransientError,
    UnknownKey,
    UnknownQueue,
)

# Grouped by what the error is about (as dramatiq/__init__.py does), not sorted.
__all__ = [  # noqa: RUF022
    # Base
    "ConveyorError",
    # Configuration
    "SettingsError",
    # Services and the store
    "JobNotRecorded",
    "RegistryUnavailable",
    "SchemaMissing",
    "ServiceUnavailable",
    "StoreConflict",
    "StoreRefused",
    # Messages refused by a worker (signing)
    "SignatureError",
    # Encryption at rest
    "DecryptionError",
    "UnknownKey",
    # Lookups
    "ArtifactNotFound",
    "DeadLetterNotFound",
    "JobNotFound",
    "UnknownQueue",
    # Outcomes seen by producers and the CLI
    "BenchError",
    "JobFailed",
    # Raised by job code to steer retries, or at a cancelled job's stop point
    "JobCancelled",
    "PermanentError",
    "TransientError",
]
