"""Whether a worker process is alive, from the worker registry in Redis.

Asked when a message arrives for a job that is already ``running`` (rare: a broker restart
mid-job, a worker killed) and by the orphan sweep; one SCAN of the registry serves every
question for a second rather than each paying for its own.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from jobs.admin.workers import read_beats

if TYPE_CHECKING:
    from jobs.redis_lite import RegistryClient

logger = logging.getLogger("conveyor.liveness")

#: Seconds one reading of the registry answers for.
FRESH_FOR = 1.0


class RegistryLiveness:
    """``alive(worker_id)``: True or False per the registry, None when Redis cannot say."""

    def __init__(self, client: RegistryClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._lock = threading.Lock()
        self._live: set[str] | None = None
        self._read_at = float("-inf")

    def __call__(self, worker_id: str) -> bool | None:
        live = self.workers()
        return None if live is None else worker_id in live

    def workers(self) -> set[str] | None:
        """The ids of the live worker processes; None when Redis cannot say."""
        with self._lock:
            if time.monotonic() - self._read_at > FRESH_FOR:
                self._live = self._read()
                self._read_at = time.monotonic()
            return self._live

    def _read(self) -> set[str] | None:
        try:
            return {beat.worker_id for beat in read_beats(self.client, self.namespace)}
        # Any error of the registry's client (LiteRedis's RegistryUnavailable, or redis-py's
        # RedisError for a URL only redis-py reads) means the same: Redis cannot say.
        except Exception as exc:
            logger.warning("worker registry unavailable (%s): which workers are alive is unknown", exc)
            return None


def forget_process(client: RegistryClient, key: str) -> None:
    """Drop a dead process's registry entry now, rather than when its TTL runs out."""
    try:
        client.delete(key)
    except Exception as exc:  # as in RegistryLiveness._read
        logger.info("worker registry: could not drop %s (%s); it expires on its own", key, exc)
