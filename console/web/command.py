"""`conveyor web`: serve the dashboard with uvicorn."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import click

from console.common import AppState, banner, fail
from console.exit_codes import EXIT_USAGE
from jobs.errors import SettingsError
from jobs.logs import configure_logging
from jobs.schedule.spec import load_schedule

#: The dashboard's TCP port unless ``--port`` says otherwise (SPEC section 9).
DEFAULT_WEB_PORT = 8080

EPILOG = """\b
Examples:
  conveyor web
  conveyor web --schedule deploy/schedule.example.toml
  CONVEYOR_WEB_TOKEN=… conveyor web --host 0.0.0.0 --port 8080
"""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command(epilog=EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", default=DEFAULT_WEB_PORT, show_default=True, type=click.IntRange(0, 65535), help="TCP port."
)
@click.option(
    "--schedule",
    "schedule_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The scheduler's schedule file (TOML), for the next runs on /schedule.",
)
@click.pass_obj
def web(state: AppState, host: str, port: int, schedule_path: Path | None) -> None:
    """Serve the web dashboard: queues, jobs, dead letters, workers and the schedule.

    Read-only unless CONVEYOR_WEB_TOKEN is set; then actions (retry, cancel, requeue, purge,
    pause) need the token. Without a token, only a loopback --host is allowed (exit 2).
    """
    settings = state.settings
    if settings.is_embedded:
        raise SettingsError("conveyor web needs RabbitMQ and PostgreSQL: memory:// lives inside one process")
    if settings.web_token is None and not is_loopback(host):
        fail(
            f"--host {host} would expose the dashboard beyond this machine without a token: "
            "set CONVEYOR_WEB_TOKEN or bind to 127.0.0.1",
            EXIT_USAGE,
        )
    import uvicorn

    from console.web.app import create_app

    configure_logging(logging.INFO, settings.log_format)
    plan = load_schedule(schedule_path, settings) if schedule_path is not None else None
    app = create_app(settings, state.database, schedule=plan)
    mode = "actions need the token" if settings.web_token else "read-only: no CONVEYOR_WEB_TOKEN"
    banner(settings, f"conveyor web: namespace {settings.namespace}, http://{host}:{port}/ ({mode})")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
