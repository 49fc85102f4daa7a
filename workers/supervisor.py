"""``conveyor worker``: a supervisor that runs N worker processes and replaces any that dies.

SIGTERM or SIGINT is passed on to every process, which finishes its in-flight jobs
and exits; the supervisor exits once they all have. A second signal is passed on too,
and the processes stop at once (their unfinished messages go back to RabbitMQ).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.context import ForkProcess
from types import FrameType

from jobs.logs import configure_logging
from jobs.middleware.heartbeat import Replica, registry_key
from jobs.services import redis_client
from jobs.settings import Settings
from workers.liveness import forget_process
from workers.process import run_worker_process

logger = logging.getLogger("conveyor.supervisor")

#: Seconds to wait before replacing a process that died; doubles while processes keep dying young.
RESTART_DELAY_MIN = 0.5
RESTART_DELAY_MAX = 30.0
#: Seconds a process must live to count as healthy again.
HEALTHY_AFTER = 10.0


def _child_main(
    settings: Settings, queues: set[str], threads: int, shutdown_timeout: float, replica: Replica
) -> None:
    # The supervisor's handlers came along with the fork: a child must not signal its siblings.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    configure_logging()
    raise SystemExit(
        run_worker_process(
            settings, queues=queues, threads=threads, shutdown_timeout=shutdown_timeout, replica=replica
        )
    )


class Supervisor:
    """Keeps ``processes`` worker processes alive until told to stop."""

    def __init__(
        self, settings: Settings, *, processes: int, threads: int, queues: set[str], shutdown_timeout: float
    ) -> None:
        self.settings = settings
        self.processes = processes
        self.threads = threads
        self.queues = queues
        self.shutdown_timeout = shutdown_timeout
        # One id for the whole replica, made here in the supervisor: every child reports under it.
        self.replica = Replica.create(processes=processes, queues=queues)
        self.children: dict[int, tuple[ForkProcess, float]] = {}
        self.stopping = False
        self.restart_delay = RESTART_DELAY_MIN
        self._context = multiprocessing.get_context("fork")

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        logger.info("replica %s: starting %d worker processes", self.replica.replica_id, self.processes)
        for _ in range(self.processes):
            self._spawn()
        while self.children:
            time.sleep(0.2)
            self._reap()
        logger.info("all worker processes stopped")
        return 0

    def _spawn(self) -> None:
        process = self._context.Process(
            target=_child_main,
            args=(self.settings, self.queues, self.threads, self.shutdown_timeout, self.replica),
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

    def _forget(self, pid: int) -> None:
        # A process that died without a word leaves its registry entry behind for a TTL; until
        # it goes, its running jobs count as running elsewhere and their messages wait.
        if self.settings.is_embedded:
            return
        client = redis_client(self.settings.redis_url)
        try:
            forget_process(client, registry_key(self.settings.namespace, self.replica.replica_id, pid))
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
