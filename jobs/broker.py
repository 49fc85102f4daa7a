"""The one place where a Dramatiq broker is built, from settings, with explicit middleware.

Nothing here runs at import time and no process-global broker is set: callers hold
the broker they built and pass it on.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import xq_name
from dramatiq.errors import BrokerConnectionError
from dramatiq.middleware import Middleware

from jobs.consumer import ChannelBoundConsumer
from jobs.defaults import DEFAULT_CONNECT_TIMEOUT, MESSAGE_ENVELOPE_BYTES
from jobs.errors import ServiceUnavailable, SettingsError
from jobs.kinds import KINDS
from jobs.settings import BROKER_TLS_PARAMETERS, Settings, mask_url
from jobs.tls import explained

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
    broker = ConveyorRabbitmqBroker(
        url=[amqp_url(settings, url) for url in settings.broker_urls],
        confirm_delivery=True,
        max_priority=settings.max_priority,
        middleware=list(middleware),
    )
    # Dramatiq builds its parameters from the URLs alone: these add the TLS context (CA, client cert).
    broker.parameters = broker_parameters(settings)
    if settings.queue_type == "quorum":
        broker.quorum_delivery_limit = settings.delivery_limit
    broker.max_body_bytes = settings.max_payload_bytes + MESSAGE_ENVELOPE_BYTES
    return broker


#: Set on a ``.DQ`` message once the store holds it: Dramatiq's hand-over to the queue then publishes
#: nothing, and only acknowledges it.
HELD_OPTION = "conveyor_held"

#: Where a delayed message goes instead of RabbitMQ's ``.DQ``: the message and when it is due.
HoldSink = Callable[[dramatiq.Message[Any], datetime], None]


class ConveyorRabbitmqBroker(RabbitmqBroker):
    """Dramatiq's RabbitMQ broker, with delayed messages held by Conveyor and optional quorum queues.

    With a ``hold`` sink set (workers set it), ``enqueue(..., delay=…)`` hands the message to
    the sink rather than to the ``.DQ`` queue, where a Dramatiq worker would keep it
    unacknowledged in memory until due (RabbitMQ's ``consumer_timeout`` closes such a channel
    after 30 min: Dramatiq #827).
    """

    hold: HoldSink | None = None
    #: Set for quorum queues: RabbitMQ dead-letters a message after this many deliveries.
    quorum_delivery_limit: int | None = None
    #: Bytes: a consumed message's body larger than this is dead-lettered undecoded (None: no cap).
    max_body_bytes: int | None = None

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        if message.options.get(HELD_OPTION):
            return message
        if delay is None or self.hold is None:
            return super().enqueue(message, delay=delay)
        self.emit_before("enqueue", message, delay)
        self.hold(message, datetime.now(UTC) + timedelta(milliseconds=delay))
        self.emit_after("enqueue", message, delay)
        return message

    @property
    def consumer_class(self) -> type[ChannelBoundConsumer]:
        return ChannelBoundConsumer

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        arguments: dict[str, Any] = super()._build_queue_arguments(queue_name)  # type: ignore[no-untyped-call]
        if self.quorum_delivery_limit is not None:
            arguments["x-queue-type"] = "quorum"
            arguments["x-delivery-limit"] = self.quorum_delivery_limit
        return arguments

    def _declare_xq_queue(self, queue_name: str) -> Any:
        if self.quorum_delivery_limit is None:
            return super()._declare_xq_queue(queue_name)  # type: ignore[no-untyped-call]
        return self.channel.queue_declare(
            queue=xq_name(queue_name),
            durable=True,
            arguments={"x-queue-type": "quorum", "x-message-ttl": DEAD_MESSAGE_TTL},
        )


def amqp_url(settings: Settings, url: str | None = None) -> str:
    """A broker URL as pika reads it (``url``, one of :attr:`Settings.broker_urls`; the first by
    default): with connection parameters that fail fast and notice dead peers, and without
    Conveyor's TLS parameters (:func:`broker_parameters` applies those).

    Parameters already present in the user's URL are kept.
    """
    parts = urlsplit(settings.broker_urls[0] if url is None else url)
    params = {k: v for k, v in parse_qsl(parts.query) if k not in BROKER_TLS_PARAMETERS}
    params.setdefault("heartbeat", str(settings.broker_heartbeat))
    params.setdefault("connection_attempts", "1")
    params.setdefault("retry_delay", "1")
    params.setdefault("socket_timeout", str(DEFAULT_CONNECT_TIMEOUT))
    params.setdefault("blocked_connection_timeout", "60")
    return urlunsplit(parts._replace(query=urlencode(params)))


def broker_parameters(settings: Settings) -> list[pika.URLParameters]:
    """pika's connection parameters, one per node of ``CONVEYOR_BROKER_URL``, in order: every
    connection to RabbitMQ uses them, and ``pika.BlockingConnection`` tries them in turn.

    ``amqps://`` verifies the server's certificate and host name, against the CA file named by
    ``?cafile=`` or else the system's CAs; ``?certfile=`` (and ``?keyfile=`` when the key is in
    a file of its own) presents a client certificate.

    Raises:
        SettingsError: a CA, certificate or key file cannot be read.
    """
    nodes = []
    for url in settings.broker_urls:
        parameters = pika.URLParameters(amqp_url(settings, url))
        if urlsplit(url).scheme == "amqps":
            parameters.ssl_options = pika.SSLOptions(_tls_context(url))
        nodes.append(parameters)
    return nodes


def _tls_context(url: str) -> ssl.SSLContext:
    tls = dict(parse_qsl(urlsplit(url).query))
    try:
        context = ssl.create_default_context(cafile=tls.get("cafile"))
        if "certfile" in tls:
            context.load_cert_chain(tls["certfile"], tls.get("keyfile"))
    except (OSError, ssl.SSLError) as exc:  # a missing or malformed PEM file
        raise SettingsError(f"CONVEYOR_BROKER_URL={mask_url(url)}: {exc}") from None
    return context


def check_broker(settings: Settings) -> None:
    """Raise :class:`ServiceUnavailable` unless RabbitMQ accepts a connection."""
    if settings.is_embedded:
        return
    try:
        pika.BlockingConnection(broker_parameters(settings)).close()
    except BROKER_ERRORS as exc:
        raise broker_unavailable(settings, exc) from None


def broker_unavailable(settings: Settings, exc: BaseException) -> ServiceUnavailable:
    """Translate a pika or Dramatiq connection error into Conveyor's own (a failed certificate
    check reads ``certificate verify failed: <why>``)."""
    return ServiceUnavailable("RabbitMQ", mask_url(settings.broker_url), explained(exc))
