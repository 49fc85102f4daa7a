"""`conveyor exporter`: one namespace's cluster view for Prometheus (``/metrics``, ``/healthz``)."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import click

from console.common import AppState, Seconds, banner, fail
from console.exit_codes import EXIT_USAGE
from jobs.admin.exporter import ClusterCollector, ExporterOptions, make_exporter_server
from jobs.errors import SettingsError
from jobs.logs import configure_logging
from jobs.redis_lite import redis_client

#: The exporter's TCP port unless ``--port`` says otherwise.
DEFAULT_EXPORTER_PORT = 9465

EPILOG = """\b
Examples:
  conveyor exporter --port 9465
  CONVEYOR_NAMESPACE=billing conveyor exporter --host 0.0.0.0 --port 9466
"""


class _Stop(Exception):
    """SIGTERM: leave ``serve_forever`` the way Ctrl-C does."""


@click.command(epilog=EPILOG)
@click.option(
    "--host", default=None, help="Address to bind  [default: CONVEYOR_METRICS_HOST, itself 127.0.0.1]"
)
@click.option(
    "--port",
    default=DEFAULT_EXPORTER_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port (0: any free port, printed at start).",
)
@click.option(
    "--drift-grace",
    default=60.0,
    show_default=True,
    type=Seconds(0),
    help="Seconds a job must have been due before it counts towards conveyor_jobs_drift.",
)
@click.option(
    "--final-counts-every",
    "final_every",
    default=60.0,
    show_default=True,
    type=Seconds(0),
    help="Seconds between two counts of the finished jobs (a table scan); 0: at every scrape.",
)
@click.pass_obj
def exporter(state: AppState, host: str | None, port: int, drift_grace: float, final_every: float) -> None:
    """Serve one namespace's cluster view to Prometheus: GET /metrics and GET /healthz.

    Reads RabbitMQ's management API (CONVEYOR_RABBITMQ_API_URL), PostgreSQL and Redis at each
    scrape. Run one per namespace; a source that is down leaves out its metrics and sets
    conveyor_exporter_up{source} to 0. SIGTERM or Ctrl-C stops it.
    """
    settings = state.settings
    if settings.is_embedded:
        raise SettingsError(
            "conveyor exporter needs RabbitMQ and PostgreSQL: memory:// lives inside one process"
        )
    if settings.rabbitmq_api_url is None:
        raise SettingsError(
            "conveyor exporter reads queues through RabbitMQ's management API: set CONVEYOR_RABBITMQ_API_URL "
            "(e.g. http://guest:guest@127.0.0.1:15672)"
        )
    configure_logging(logging.INFO, settings.log_format)
    options = ExporterOptions(drift_grace=drift_grace, final_every=final_every)
    collector = ClusterCollector(settings, state.database, redis_client(settings.redis_url), options)
    address = host or settings.metrics_host
    try:
        server = make_exporter_server(collector, address, port)
    except OSError as exc:
        fail(f"cannot serve on {address}:{port}: {exc.strerror or exc}", EXIT_USAGE)
    collector.final.start()
    bound = server.server_address[1]
    banner(
        settings,
        f"conveyor exporter: namespace {settings.namespace}, serving http://{address}:{bound}/metrics "
        f"and /healthz",
    )
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        server.server_close()
        collector.final.stop()
        collector.redis.close()


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop
