"""``conveyor worker``: a supervisor that runs N worker processes and replaces any that dies.

SIGTERM or SIGINT is passed on to every process, which finishes its in-flight jobs
and exits; the supervisor exits once they all have. A second signal is passed on too,
and the processes stop at once (their unfinished messages go back to RabbitMQ).

The supervisor first replaces its own program (same pid) with a fresh Python that imports
only this module: the command line's modules (click, rich, the admin commands, SQLAlchemy…)
would otherwise sit in the supervisor and in every forked process. Each worker process
imports the worker stack after the fork, and only the job kinds it runs.

With ``CONVEYOR_METRICS_PORT`` set, the supervisor also serves ``/metrics`` and ``/healthz`` for
the whole replica (``workers/metrics_server.py``), through the restarts of its processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Sequence
from multiprocessing.context import ForkProcess
from types import FrameType
from typing import TYPE_CHECKING, Any

from jobs.logs import configure_logging
from jobs.settings import Settings

if TYPE_CHECKING:
    from workers.metrics_server import Health, MetricsDirectory, MetricsServer

logger = logging.getLogger("conveyor.supervisor")

#: Seconds to wait before replacing a process that died; doubles while processes keep dying young.
RESTART_DELAY_MIN = 0.5
RESTART_DELAY_MAX = 30.0
#: Seconds a process must live to count as healthy again.
HEALTHY_AFTER = 10.0
#: Exit code when the metrics port cannot be bound (in use, or a host this machine does not have).
EXIT_NO_METRICS_PORT = 2


def _child_main(
    settings: Settings,
    queues: set[str],
    threads: int,
    shutdown_timeout: float,
    replica: dict[str, Any],
    metrics: tuple[str, int] | None = None,
) -> None:
    # The supervisor's handlers came along with the fork: a child must not signal its siblings.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if metrics is not None:  # the supervisor's listening socket came along too: not this process's
        os.close(metrics[1])
    configure_logging(log_format=settings.log_format)
    from jobs.middleware.heartbeat import Replica  # the worker stack: imported after the fork
    from workers.process import run_worker_process

    shared = Replica(**{**replica, "queues": frozenset(replica["queues"])})
    raise SystemExit(
        run_worker_process(
            settings,
            queues=queues,
            threads=threads,
            shutdown_timeout=shutdown_timeout,
            replica=shared,
            metrics_dir=metrics[0] if metrics is not None else None,
        )
    )


def _new_replica(processes: int, queues: set[str]) -> dict[str, Any]:
    from jobs.middleware.heartbeat import Replica

    replica = Replica.create(processes=processes, queues=queues)
    return {**dataclasses.asdict(replica), "queues": sorted(replica.queues)}


class Supervisor:
    """Keeps ``processes`` worker processes alive until told to stop."""

    def __init__(
        self,
        settings: Settings,
        *,
        processes: int,
        threads: int,
        queues: set[str],
        shutdown_timeout: float,
        replica: dict[str, Any] | None = None,
        lean: bool = False,
        include: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.processes = processes
        self.threads = threads
        self.queues = queues
        self.shutdown_timeout = shutdown_timeout
        # One id for the whole replica, made here in the supervisor: every child reports under it.
        self.replica = replica or _new_replica(processes, queues)
        #: True in the fresh program :meth:`run` replaces the command line with.
        self.lean = lean
        #: ``--include`` modules: imported again by the fresh program, also those that register no
        #: kind (one that sets up an OpenTelemetry SDK, say).
        self.include = tuple(include)
        self.children: dict[int, tuple[ForkProcess, float]] = {}
        #: The replica's metrics directory and endpoint, when ``metrics_port`` is set.
        self.metrics_dir: MetricsDirectory | None = None
        self.metrics_server: MetricsServer | None = None
        self.stopping = False
        self.restart_delay = RESTART_DELAY_MIN
        self._context = multiprocessing.get_context("fork")

    def run(self) -> int:
        if not self.lean:
            self._become_lean()  # returns only when the program cannot be replaced
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        logger.info("replica %s: starting %d worker processes", self.replica["replica_id"], self.processes)
        try:
            if not self._start_metrics():
                return EXIT_NO_METRICS_PORT
            for _ in range(self.processes):
                self._spawn()
            while self.children:
                time.sleep(0.2)
                self._reap()
        finally:
            self._stop_metrics()
        logger.info("all worker processes stopped")
        return 0

    def _start_metrics(self) -> bool:
        """Serve ``/metrics`` and ``/healthz`` when a port is set; False when it cannot be bound."""
        host, port = self.settings.metrics_host, self.settings.metrics_port
        if port is None:
            return True
        from workers.metrics_server import MetricsDirectory, MetricsServer  # only with an endpoint

        self.metrics_dir = MetricsDirectory()
        try:
            self.metrics_server = MetricsServer(host, port, self.metrics_dir, self.health)
        except OSError as exc:
            logger.error(
                "cannot serve metrics on %s:%d (%s): exiting with code %d",
                host,
                port,
                exc,
                EXIT_NO_METRICS_PORT,
            )
            return False
        self.metrics_server.start()
        return True

    def _stop_metrics(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self.metrics_dir is not None:
            self.metrics_dir.close()

    def health(self) -> Health:
        """Whether this replica consumes: what ``/healthz`` answers."""
        from workers.metrics_server import Health

        if self.stopping:
            return Health(False, "stopping")
        assert self.metrics_dir is not None
        return self.metrics_dir.health({pid: started for pid, (_, started) in list(self.children.items())})

    def _spawn(self) -> None:
        metrics = None
        if self.metrics_dir is not None and self.metrics_server is not None:
            metrics = (self.metrics_dir.path, self.metrics_server.fileno())
        process = self._context.Process(
            target=_child_main,
            args=(self.settings, self.queues, self.threads, self.shutdown_timeout, self.replica, metrics),
            daemon=False,
        )
        process.start()
        assert process.pid is not None
        self.children[process.pid] = (process, time.monotonic())

    def _reap(self) -> None:
        for pid, (process, started) in list(self.children.items()):
            if process.is_alive():
                continue
            process.join()
            del self.children[pid]
            if self.metrics_dir is not None:
                self.metrics_dir.forget(pid)
            self._forget(pid)
            if self.stopping:
                continue
            lived = time.monotonic() - started
            self.restart_delay = (
                RESTART_DELAY_MIN if lived > HEALTHY_AFTER else min(self.restart_delay * 2, RESTART_DELAY_MAX)
            )
            logger.error(
                "worker process %d died (exit code %s) after %.1f s; replacing it in %.1f s",
                pid,
                process.exitcode,
                lived,
                self.restart_delay,
            )
            time.sleep(self.restart_delay)
            if not self.stopping:
                self._spawn()

    def _become_lean(self) -> None:
        """Replace this program by ``python -c 'lean_main(FD)'`` (same pid, same signals), its
        arguments passed through a pipe (the settings hold passwords: not in argv)."""
        state = {
            "settings": dataclasses.asdict(self.settings),
            "processes": self.processes,
            "threads": self.threads,
            "queues": sorted(self.queues),
            "shutdown_timeout": self.shutdown_timeout,
            "replica": self.replica,
            "include": sorted({*self.include, *_included_modules()}),
            "log_level": logging.getLogger().level,
        }
        read_end, write_end = os.pipe()
        os.write(write_end, json.dumps(state).encode())  # a few kB: well within a pipe's buffer
        os.close(write_end)
        os.set_inheritable(read_end, True)
        bootstrap = f"import sys; sys.path[:0] = {sys.path!r}; from workers import supervisor; "
        bootstrap += f"supervisor.lean_main({read_end})"
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execv(sys.executable, [sys.executable, "-c", bootstrap])  # noqa: S606 - a fixed program
        except OSError as exc:
            os.close(read_end)
            logger.warning("supervisor stays in the command's process (%s)", exc)

    def _forget(self, pid: int) -> None:
        # A process that died without a word leaves its registry entry behind for a TTL; until
        # it goes, its running jobs count as running elsewhere and their messages wait.
        if self.settings.is_embedded:
            return
        from jobs.middleware.heartbeat import registry_key  # only once a process has died
        from jobs.redis_lite import registry_client
        from workers.liveness import forget_process

        client = registry_client(self.settings.redis_url)
        try:
            forget_process(client, registry_key(self.settings.namespace, self.replica["replica_id"], pid))
        finally:
            client.close()

    def _request_stop(self, signum: int, _frame: FrameType | None) -> None:
        # Every signal is passed on: a worker process stops at once on its second one.
        name = signal.Signals(signum).name
        if self.stopping:
            logger.warning(
                "received %s again: stopping %d worker processes at once", name, len(self.children)
            )
        else:
            logger.info("received %s: stopping %d worker processes", name, len(self.children))
        self.stopping = True
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def _included_modules() -> list[str]:
    """The modules that registered job kinds of their own (``conveyor worker --include``)."""
    from jobs.kinds import registered_modules

    return registered_modules()


def lean_main(fd: int) -> None:
    """The supervisor's own program: read its arguments from ``fd`` and run."""
    import importlib

    with os.fdopen(fd, "rb") as pipe:
        state = json.loads(pipe.read())
    configure_logging(state["log_level"], state["settings"]["log_format"])
    for module in state["include"]:
        importlib.import_module(module)
    supervisor = Supervisor(
        Settings(**state["settings"]),
        processes=state["processes"],
        threads=state["threads"],
        queues=set(state["queues"]),
        shutdown_timeout=state["shutdown_timeout"],
        replica=state["replica"],
        lean=True,
    )
    sys.exit(supervisor.run())
