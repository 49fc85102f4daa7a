"""The CLI's exit codes (SPEC §5), and which of Conveyor's errors ends a command with which."""

from __future__ import annotations

from jobs.errors import ConveyorError, ServiceUnavailable, SettingsError

#: Success.
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


def codes_by_error() -> tuple[tuple[type[BaseException], int], ...]:
    """The rules :func:`exit_code` applies, in order: (error class, exit code) pairs; an error
    gets the code of the first class it is an instance of, else :data:`EXIT_FAILURE`."""
    return _BY_ERROR


def code_for(kind: type[BaseException]) -> int:
    """The exit code a command ends with when an error of class ``kind`` stops it."""
    return next((code for base, code in _BY_ERROR if issubclass(kind, base)), EXIT_FAILURE)


def exit_code(error: BaseException) -> int:
    """The exit code a command ends with when ``error`` stops it."""
    return code_for(type(error))
