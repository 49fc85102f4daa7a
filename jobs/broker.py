"""The one place where a Dramatiq broker is built, from settings, with explicit middleware.

Nothing here runs at import time and no process-global broker is set: callers hold
the broker they built and pass it on.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import BrokerConnectionError
from dramatiq.middleware import Middleware

from jobs.defaults import DEFAULT_CONNECT_TIMEOUT
from jobs.errors import ServiceUnavailable
from jobs.kinds import KINDS
from jobs.settings import Settings, mask_url

#: Exceptions meaning "RabbitMQ could not be reached or dropped us".
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    BrokerConnectionError,
    pika.exceptions.AMQPError,
    OSError,
)


def build_broker(settings: Settings, middleware: Sequence[Middleware] = ()) -> dramatiq.Broker:
    """A RabbitMQ broker with publisher confirms (or an in-process one for ``memory://``).

    Queues are declared exactly as Dramatiq's own ``RabbitmqBroker`` declares them
    (durable, with ``.DQ`` and ``.XQ`` companions), messages are persistent, and
    ``CONVEYOR_MAX_PRIORITY`` opts into priority queues.
    """
    if settings.is_embedded:
        stub = StubBroker(middleware=list(middleware))
        # RabbitMQ creates queues on first use; the stub broker needs them declared up front.
        for kind in KINDS.values():
            stub.declare_queue(settings.queue_name(kind.queue))
        return stub
    return RabbitmqBroker(
        url=amqp_url(settings),
        confirm_delivery=True,
        max_priority=settings.max_priority,
        middleware=list(middleware),
    )


def amqp_url(settings: Settings) -> str:
    """The broker URL with connection parameters that fail fast and notice dead peers.

    Parameters already present in the user's URL are kept.
    """
    parts = urlsplit(settings.broker_url)
    params = dict(parse_qsl(parts.query))
    params.setdefault("heartbeat", str(settings.broker_heartbeat))
    params.setdefault("connection_attempts", "1")
    params.setdefault("retry_delay", "1")
    params.setdefault("socket_timeout", str(DEFAULT_CONNECT_TIMEOUT))
    params.setdefault("blocked_connection_timeout", "60")
    return urlunsplit(parts._replace(query=urlencode(params)))


def check_broker(settings: Settings) -> None:
    """Raise :class:`ServiceUnavailable` unless RabbitMQ accepts a connection."""
    if settings.is_embedded:
        return
    try:
        pika.BlockingConnection(pika.URLParameters(amqp_url(settings))).close()
    except BROKER_ERRORS as exc:
        raise broker_unavailable(settings, exc) from None


def broker_unavailable(settings: Settings, exc: BaseException) -> ServiceUnavailable:
    """Translate a pika or Dramatiq connection error into Conveyor's own."""
    reason = str(exc).strip() or type(exc).__name__
    return ServiceUnavailable("RabbitMQ", mask_url(settings.broker_url), reason.splitlines()[0])
