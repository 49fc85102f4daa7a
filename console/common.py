"""What every `conveyor` command shares: state, options, errors, consoles."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable
from functools import cached_property
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console

from console.exit_codes import EXIT_USAGE, exit_code
from console.text import visible
from jobs import defaults
from jobs.admin.operations import Operations
from jobs.broker import check_broker
from jobs.errors import ConveyorError, SettingsError
from jobs.keyring import keyring_of
from jobs.logs import logs_as_json, mask_document, mask_secrets
from jobs.settings import Settings
from jobs.store import Database
from producers import Client

F = TypeVar("F", bound=Callable[..., Any])
# Piped output is not cut at 80 columns: ids and errors stay whole for grep.
# emoji=False: ":fire:" in a job's data is text, not an emoji.
out = Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)


class AppState:
    """Per-command context, built on first use: settings, the admin operations and a client,
    sharing one database pool."""

    def __init__(self, overrides: dict[str, Any]) -> None:
        self.overrides = overrides

    @cached_property
    def settings(self) -> Settings:
        return Settings.from_env(os.environ, **self.overrides)

    @cached_property
    def ops(self) -> Operations:
        """Reading jobs, queues, stats, workers, dead letters and schedules; pruning."""
        return Operations(self._remote_settings(), self._database)

    @cached_property
    def client(self) -> Client:
        """Enqueueing, retrying, cancelling and waiting."""
        return Client(self._remote_settings(), db=self._database)

    def publisher(self) -> Client:
        """The client, once RabbitMQ has answered: a shell command fails at once (exit 3) rather
        than retrying an enqueue the way an application's producer rides out a broker restart."""
        check_broker(self.settings)
        return self.client

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()
        if "ops" in self.__dict__:
            self.ops.close()
        if "_database" in self.__dict__:
            self._database.dispose()

    @property
    def database(self) -> Database:
        """The store (with the encryption keys), for commands that need only PostgreSQL."""
        return self._database

    @cached_property
    def _database(self) -> Database:
        return Database(self.settings.database_url, keyring=keyring_of(self.settings.encryption_keys))

    def _remote_settings(self) -> Settings:
        if self.settings.is_embedded:
            raise SettingsError(
                "memory:// lives inside one process, so a shell command cannot reach a worker: "
                "use RabbitMQ, or `conveyor demo`"
            )
        return self.settings


class Seconds(click.FloatRange):
    """A number of seconds within ``[min, max]`` (at most ten years unless a smaller ``max`` is
    given), finite: click's ``FloatRange`` lets ``nan`` through, and ``inf`` without a maximum,
    either of which would end in a traceback further on."""

    name = "seconds"

    def __init__(self, min: float | None = 0, max: float | None = None) -> None:
        super().__init__(min, defaults.MAX_DELAY if max is None else max)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return seconds


class ConveyorGroup(click.Group):
    """Turns Conveyor's errors into one line on stderr and the right exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ConveyorError, ValueError) as exc:
            fail(str(exc), exit_code(exc))
        except OverflowError as exc:  # a number or a date past what Python holds: bad usage
            fail(f"a value is too large: {exc}", EXIT_USAGE)


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr (secrets masked, control characters made visible), then exit ``code``.

    With JSON logs on (``CONVEYOR_LOG_FORMAT=json`` in a long-running command), a log record.
    """
    if logs_as_json():
        logging.getLogger("conveyor").error("conveyor: error: %s", message)
    else:
        err.print(f"conveyor: error: {visible(mask_secrets(message), newlines=True)}", markup=False)
    sys.exit(code)


def banner(settings: Settings, text: str) -> None:
    """A long-running command's start-up line on stderr: a log record with JSON logs on
    (``CONVEYOR_LOG_FORMAT=json``), else printed as it is."""
    if settings.log_format == "json":
        logging.getLogger("conveyor").info("%s", text)
    else:
        err.print(text, markup=False)


def echo_json(data: Any, *, indent: int | None = 2) -> None:
    """Print a ``--json`` document with secrets masked, as the readable views show them: values of
    secret-looking keys and URL passwords become ``***`` (see :func:`jobs.logs.mask_document`).
    Non-ASCII characters are escaped, so no control character reaches the terminal either."""
    click.echo(json.dumps(mask_document(data), indent=indent))


def service_options(command: F) -> F:
    """The connection options every command shares; each shows its environment variable."""
    options = [
        click.option("--broker-url", envvar="CONVEYOR_BROKER_URL", show_envvar=True, help="RabbitMQ URL."),
        click.option(
            "--database-url", envvar="CONVEYOR_DATABASE_URL", show_envvar=True, help="Job store URL."
        ),
        click.option("--redis-url", envvar="CONVEYOR_REDIS_URL", show_envvar=True, help="Redis URL."),
        click.option(
            "--namespace", envvar="CONVEYOR_NAMESPACE", show_envvar=True, help="Prefix of queues and keys."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(command)


def delivery_options(command: F) -> F:
    options = [
        click.option("--delay", type=Seconds(0), help="Seconds before the job may run."),
        click.option("--priority", type=int, help="Message priority (needs CONVEYOR_MAX_PRIORITY)."),
        click.option("--max-retries", type=click.IntRange(0), help="Retries after the first attempt."),
        click.option(
            "--min-backoff", type=Seconds(0, defaults.MAX_BACKOFF), help="Seconds before the first retry."
        ),
        click.option(
            "--max-backoff",
            type=Seconds(0, defaults.MAX_BACKOFF),
            help="Longest wait between retries, seconds.",
        ),
        click.option("--idempotency-key", help="Enqueue at most once per key."),
        click.option(
            "--wait",
            "wait_timeout",
            type=Seconds(0),
            default=None,
            help="Wait up to N seconds for the result.",
        ),
        json_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command
