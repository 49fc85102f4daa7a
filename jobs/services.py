"""What job code may use in a worker: settings, the store, Redis, and per-process resources."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from jobs.delivery import DeliveryOptions
from jobs.errors import ServiceUnavailable
from jobs.redis_lite import redis_client, registry_client
from jobs.settings import Settings, mask_url
from jobs.store import Database
from jobs.store.artifacts import ArtifactStore
from jobs.tls import certificate_failure

if TYPE_CHECKING:
    import redis

    from jobs.redis_lite import RegistryClient

T = TypeVar("T")


def redis_certificate_error(settings: Settings, exc: BaseException) -> ServiceUnavailable | None:
    """The error to stop on when a Redis failure is a failed certificate check, else None.

    Redis being down is an outage that jobs ride out; a certificate it cannot verify is a
    configuration mistake that no waiting mends, so commands and workers stop on it (exit 3).
    """
    failure = certificate_failure(exc)
    return None if failure is None else ServiceUnavailable("Redis", mask_url(settings.redis_url), failure)


def check_redis_certificate(settings: Settings) -> None:
    """Raise :class:`ServiceUnavailable` when Redis answers with a certificate Conveyor cannot
    verify; Redis being unreachable otherwise is tolerated (it is an aid, SPEC section 2).

    Raises:
        ServiceUnavailable: a ``rediss://`` server whose certificate fails verification.
    """
    if urlsplit(settings.redis_url).scheme != "rediss":
        return
    import redis  # the CLI's check, before a command or a worker starts

    client = redis_client(settings.redis_url)
    try:
        client.ping()
    except redis.RedisError as exc:
        error = redis_certificate_error(settings, exc)
        if error is not None:
            raise error from None
    finally:
        client.close()


class EnqueuedJob(Protocol):
    """What an enqueue hands back that the core reads: the job's id."""

    @property
    def id(self) -> str: ...


class Producer(Protocol):
    """Enqueues jobs for the core: a job's follow-ups, the scheduler's ticks (``producers.Client``
    is one; the core never imports ``producers``)."""

    @property
    def settings(self) -> Settings: ...

    def enqueue_with_options(
        self,
        kind_name: str,
        payload: Mapping[str, Any],
        options: DeliveryOptions,
        *,
        parent_id: str | None = None,
    ) -> EnqueuedJob: ...


class Services:
    """Built once per worker process and handed to every job's ``run``."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        #: Set by the worker runtime once its broker exists.
        self.producer: Producer | None = None
        self.artifacts = ArtifactStore(db, settings.artifact_url)
        self._resources: dict[str, Any] = {}
        self._lock = threading.Lock()

    @cached_property
    def redis(self) -> redis.Redis:
        """redis-py, for job code (rate limits, caches); imported on first use."""
        return redis_client(self.settings.redis_url)

    @cached_property
    def registry(self) -> RegistryClient:
        """The worker registry's client (``jobs/redis_lite.py``)."""
        return registry_client(self.settings.redis_url)

    def resource(self, name: str, factory: Callable[[], T]) -> T:
        """A per-process resource (an SMTP pool, compiled templates), made on first use."""
        with self._lock:
            if name not in self._resources:
                self._resources[name] = factory()
            value: T = self._resources[name]
            return value

    def close(self) -> None:
        for resource in self._resources.values():
            close = getattr(resource, "close", None)
            if callable(close):
                close()
        if "redis" in self.__dict__:
            self.redis.close()
        if "registry" in self.__dict__:
            self.registry.close()
