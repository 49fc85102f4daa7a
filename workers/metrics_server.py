"""The replica's ``/metrics`` and ``/healthz``, served by the supervisor (``CONVEYOR_METRICS_PORT``).

The worker processes write their metrics into one private directory per replica, in
``prometheus_client``'s multiprocess format (``jobs/metrics.py``); the supervisor adds them up
on each scrape (``MultiProcessCollector``). When a process is reaped, its live gauges are
dropped (``mark_process_dead``) and its counters and histograms stay: what it ran did happen,
and its replacement, a new pid, writes files of its own, so nothing is counted twice.

Health: each worker process writes ``health-<pid>`` every second, ``1`` while all its consumers
are attached to RabbitMQ, ``0`` otherwise. ``/healthz`` answers 200 while every worker process of
the replica has said ``1`` within :data:`HEALTH_STALE` seconds, 503 otherwise (a process just
started gets :data:`START_GRACE` seconds to say it, as long as another one consumes).

This module imports ``prometheus_client`` only once the directory is set in
``PROMETHEUS_MULTIPROC_DIR``: the library reads that variable when it is first imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from jobs.metrics import HEALTH_FILE

logger = logging.getLogger("conveyor.supervisor")

#: Seconds after which a worker process's health report counts as missing.
HEALTH_STALE = 10.0
#: Seconds a newly started worker process may take to report, while others consume.
START_GRACE = 60.0
#: The variable ``prometheus_client`` reads its multiprocess directory from.
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


class MetricsDirectory:
    """The replica's private multiprocess directory: created empty, removed on exit."""

    def __init__(self) -> None:
        # A fresh directory (mode 0700) per replica: no file of an earlier run, whose pid a new
        # process might reuse, is ever read. Set before anything imports prometheus_client.
        self.path = tempfile.mkdtemp(prefix="conveyor-metrics-")
        os.environ[MULTIPROC_VARIABLE] = self.path

    def forget(self, pid: int) -> None:
        """A worker process was reaped: its live gauges and its health report go."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]
        with contextlib.suppress(FileNotFoundError):
            Path(self.path, HEALTH_FILE.format(pid=pid)).unlink()

    def render(self) -> bytes:
        """The replica's metrics, all processes added up, in the Prometheus text format."""
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.path)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def health(self, started: Mapping[int, float]) -> Health:
        """Whether the processes ``started`` (pid → ``time.monotonic()`` at start) all consume."""
        now, clock = time.time(), time.monotonic()
        consuming, problems = 0, []
        for pid, since in sorted(started.items()):
            path = Path(self.path, HEALTH_FILE.format(pid=pid))
            try:
                fresh = now - path.stat().st_mtime <= HEALTH_STALE
                attached = path.read_text() == "1"
            except FileNotFoundError:
                if clock - since > START_GRACE:
                    problems.append(f"process {pid} has not reported for {clock - since:.0f} s")
                continue
            if fresh and attached:
                consuming += 1
            else:
                problems.append(f"process {pid} is not consuming" if fresh else f"process {pid} is silent")
        if problems or not consuming:
            return Health(False, "; ".join(problems) or "no worker process consumes yet")
        return Health(True, f"{consuming} of {len(started)} worker processes consuming")

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str


class MetricsServer:
    """``GET /metrics`` and ``GET /healthz`` on ``host:port``, in a thread of the supervisor."""

    def __init__(
        self, host: str, port: int, directory: MetricsDirectory, health: Callable[[], Health]
    ) -> None:
        handler = _handler(directory, health)
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="conveyor-metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        host, port = self.server.server_address[:2]
        logger.info("metrics on http://%s:%d/metrics, health on /healthz", host, port)

    def fileno(self) -> int:
        """The listening socket (a forked worker process closes its copy)."""
        return self.server.fileno()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(directory: MetricsDirectory, health: Callable[[], Health]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the name http.server calls
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, directory.render(), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/healthz":
                state = health()
                self._send(
                    200 if state.ok else 503, f"{state.reason}\n".encode(), "text/plain; charset=utf-8"
                )
            else:
                self._send(404, b"not found: try /metrics or /healthz\n", "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every few seconds is not news

    return Handler
