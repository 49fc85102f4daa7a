"""The CLI's exit codes (SPEC §5), and which of Conveyor's errors ends a command with which."""

from __future__ import annotations

from jobs.errors import ConveyorError, ServiceUnavailable, SettingsError

EXIT_OK = 0
#: The command ran and something failed (a job, a lookup, a refused message…).
EXIT_FAILURE = 1
#: Bad usage: an unknown option or value, a bad setting.
EXIT_USAGE = 2
#: RabbitMQ, PostgreSQL or Redis cannot be reached.
EXIT_UNAVAILABLE = 3

#: Most specific first: the first class an error is an instance of gives its code.
_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    (ServiceUnavailable, EXIT_UNAVAILABLE),
    (SettingsError, EXIT_USAGE),
    (ConveyorError, EXIT_FAILURE),
    (ValueError, EXIT_USAGE),
)


def exit_code(error: BaseException) -> int:
    """The exit code a command ends with when ``error`` stops it."""
    return next((code for kind, code in _BY_ERROR if isinstance(error, kind)), EXIT_FAILURE)
