"""Heartbeat middleware: each worker process announces itself in Redis, for ``conveyor workers``.

Every ``interval`` seconds a daemon thread writes the hash ``<ns>:workers:<replica_id>:<pid>``
(who the process is, what it consumes, how many jobs it runs and has run, whether it is
stopping) and renews its TTL, so a process that dies without a word drops out of the
registry on its own once the TTL runs out. A clean shutdown deletes the key at once.

The registry is an aid, never a dependency: job hooks only touch in-memory counters, and
a Redis error in the beating thread is logged (at most once a minute) and otherwise
ignored, so an outage of Redis never slows or stops job processing (fail open).

Place it first in the middleware list: its ``before_process_message`` then runs before
any middleware can skip the message, so every ``after_process_message`` or
``after_skip_message`` it sees matches a job it counted as busy.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.middleware import Middleware

if TYPE_CHECKING:
    from jobs.redis_lite import RegistryClient

logger = logging.getLogger("conveyor.heartbeat")

#: Seconds between two "Redis is unreachable" warnings of one process.
WARN_EVERY = 60.0


def registry_prefix(namespace: str) -> str:
    """The prefix of every worker key of ``namespace`` (``conveyor:workers:``)."""
    return f"{namespace}:workers:"


def registry_key(namespace: str, replica_id: str, pid: int) -> str:
    """The registry entry of one worker process."""
    return f"{registry_prefix(namespace)}{replica_id}:{pid}"


def heartbeat_interval(ttl: int) -> int:
    """Seconds between two beats for a key TTL of ``ttl`` seconds: two beats may be missed."""
    return max(1, ttl // 3)


def conveyor_version() -> str:
    """The installed distribution's version, or ``dev`` when running from a bare checkout."""
    try:
        return importlib.metadata.version("conveyor")
    except importlib.metadata.PackageNotFoundError:
        return "dev"


@dataclass(frozen=True)
class Replica:
    """One ``conveyor worker`` command: its supervisor and the processes it runs."""

    #: ``host:supervisor_pid:token`` (the token tells apart a pid reused after a restart).
    replica_id: str
    host: str
    supervisor_pid: int
    processes: int
    #: Namespaced queue names; empty means every declared queue.
    queues: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def create(cls, *, processes: int, queues: Iterable[str] = ()) -> Replica:
        """A new replica whose supervisor is this process (call it before forking)."""
        host = socket.gethostname()
        pid = os.getpid()
        return cls(
            replica_id=f"{host}:{pid}:{secrets.token_hex(3)}",
            host=host,
            supervisor_pid=pid,
            processes=processes,
            queues=frozenset(queues),
        )


class Heartbeat(Middleware):
    """Keeps this process's entry in the worker registry fresh while the worker runs."""

    def __init__(
        self,
        client: RegistryClient,
        *,
        namespace: str,
        replica: Replica,
        threads: int,
        ttl: int,
        worker_id: str = "",
    ) -> None:
        self.client = client
        #: The id this process signs its attempts with: the reconciler's proof of life.
        self.worker_id = worker_id
        self.namespace = namespace
        self.replica = replica
        self.threads = threads
        self.ttl = ttl
        self.version = conveyor_version()
        self.interval = heartbeat_interval(ttl)
        self.pid = os.getpid()
        self.key = self._key()
        self.stopping = False
        self.busy = 0
        self.processed = 0
        self.failed = 0
        self.started = datetime.now(UTC)
        self.queues: list[str] = sorted(replica.queues)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_warning: float | None = None

    # ------------------------------------------------------------ Dramatiq hooks

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # Built before a fork, the middleware would carry its parent's pid: take it now.
        self.pid = os.getpid()
        self.key = self._key()
        self.started = datetime.now(UTC)
        if not self.queues:
            self.queues = sorted(broker.get_declared_queues())
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="conveyor-heartbeat", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # In-flight jobs may take minutes to finish: the entry keeps beating, marked as
        # stopping, until the worker is down.
        self.stopping = True

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        # Gone at once, rather than listed for another TTL.
        self._guard(lambda: self.client.delete(self.key))

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        with self._lock:
            self.busy += 1

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        with self._lock:
            self.busy = max(0, self.busy - 1)
            if exception is None:
                self.processed += 1
            else:
                self.failed += 1

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        # A skipped message (already finished, cancelled, too old) ran no job: neither count.
        with self._lock:
            self.busy = max(0, self.busy - 1)

    # ------------------------------------------------------------ the beat

    def fields(self) -> dict[str, str | int]:
        """What this process publishes, as the registry hash stores it."""
        with self._lock:
            busy, processed, failed = self.busy, self.processed, self.failed
        return {
            "replica_id": self.replica.replica_id,
            "host": self.replica.host,
            "pid": self.pid,
            "worker_id": self.worker_id,
            "supervisor_pid": self.replica.supervisor_pid,
            "version": self.version,
            "queues": ",".join(self.queues),
            "processes": self.replica.processes,
            "threads": self.threads,
            "busy": busy,
            "processed": processed,
            "failed": failed,
            "started": self.started.isoformat(),
            "heartbeat": datetime.now(UTC).isoformat(),
            "state": "stopping" if self.stopping else "running",
        }

    def beat(self) -> bool:
        """Write this process's entry and renew its TTL; False when Redis did not take it."""

        def write() -> None:
            # One transaction: the key never exists without its TTL.
            # redis-py types the mapping's keys as a union, which a dict[str, …] cannot match.
            mapping: Mapping[Any, Any] = self.fields()
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(self.key, mapping=mapping)
                pipe.expire(self.key, self.ttl)
                pipe.execute()

        return self._guard(write)

    def _key(self) -> str:
        return registry_key(self.namespace, self.replica.replica_id, self.pid)

    def _run(self) -> None:
        self.beat()
        while not self._stop.wait(self.interval):
            self.beat()

    def _guard(self, operation: Callable[[], object]) -> bool:
        # Deliberately broad: a registry write must never take down a worker, nor end the
        # beating thread for good because of one odd error.
        try:
            operation()
        except Exception as exc:
            self._warn(exc)
            return False
        if self._last_warning is not None:
            logger.info("worker registry: Redis reachable again, %s is listed", self.key)
            self._last_warning = None
        return True

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._last_warning is None or now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            logger.warning(
                "worker registry: cannot reach Redis (%s: %s); jobs go on, `conveyor workers` "
                "will not list this process until it can",
                type(exc).__name__,
                exc,
            )
