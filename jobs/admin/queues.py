"""What each queue holds: RabbitMQ's counts (passive declares) and PostgreSQL's job ages."""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlsplit, urlunsplit

import pika
import pika.exceptions

from jobs.broker import BROKER_ERRORS, broker_parameters, broker_unavailable
from jobs.defaults import DEFAULT_CONNECT_TIMEOUT
from jobs.errors import ServiceUnavailable
from jobs.kinds import KINDS
from jobs.settings import Settings, mask_url, split_urls
from jobs.store import Database
from jobs.store.delayed import DelayedStore
from jobs.store.jobs import utcnow
from jobs.store.pauses import QueuePauseStore
from jobs.store.stats import StatsStore
from jobs.tls import explained


@dataclass(frozen=True)
class QueueStats:
    """One queue. ``ready``/``delayed``/``dead``/``consumers`` come from RabbitMQ; ``running``
    and ``oldest_wait_seconds`` (the queue's latency) from PostgreSQL."""

    queue: str
    kinds: list[str]
    ready: int
    delayed: int
    dead: int
    consumers: int
    running: int
    oldest_wait_seconds: float | None
    #: From the management API when configured (``None`` otherwise).
    unacked: int | None = None
    publish_rate: float | None = None
    deliver_rate: float | None = None
    #: Paused (``conveyor queues pause``): workers fetch nothing from it; since when, by whom.
    paused: bool = False
    paused_at: str | None = None
    paused_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def queue_stats(settings: Settings, db: Database) -> list[QueueStats]:
    """Every queue of the namespace.

    Raises:
        ServiceUnavailable: RabbitMQ or PostgreSQL cannot be reached.
    """
    names = sorted({settings.queue_name(kind.queue) for kind in KINDS.values()})
    counts = rabbitmq_counts(settings, names)
    now = utcnow()
    figures = StatsStore(db).queue_figures(names, now)
    running, oldest = figures.running, figures.oldest_waiting
    held = DelayedStore(db).count_by_queue()
    pauses = QueuePauseStore(db, settings.namespace).paused()
    management = (
        {name: _management_figures(settings, name) for name in names} if settings.rabbitmq_api_url else {}
    )
    return [
        QueueStats(
            queue=name,
            kinds=sorted(k.name for k in KINDS.values() if settings.queue_name(k.queue) == name),
            ready=counts[name][0],
            delayed=counts[f"{name}.DQ"][0] + held.get(name, (0, None))[0],
            dead=counts[f"{name}.XQ"][0],
            consumers=counts[name][1],
            running=running.get(name, 0),
            oldest_wait_seconds=round((now - oldest[name]).total_seconds(), 3) if name in oldest else None,
            **management.get(name, {}),
            paused=name in pauses,
            paused_at=pauses[name].paused_at.isoformat() if name in pauses else None,
            paused_by=pauses[name].paused_by if name in pauses else None,
        )
        for name in names
    ]


def rabbitmq_counts(settings: Settings, names: list[str]) -> dict[str, tuple[int, int]]:
    """Ready messages and consumers of each queue, its ``.DQ`` and its ``.XQ`` (0, 0 when undeclared).

    Raises:
        ServiceUnavailable: RabbitMQ cannot be reached.
    """
    counts: dict[str, tuple[int, int]] = {}
    try:
        connection = pika.BlockingConnection(broker_parameters(settings))
    except BROKER_ERRORS as exc:
        raise broker_unavailable(settings, exc) from None
    try:
        for name in names:
            for queue in (name, f"{name}.DQ", f"{name}.XQ"):
                channel = connection.channel()
                try:
                    method = channel.queue_declare(queue, passive=True).method
                    counts[queue] = (int(method.message_count), int(method.consumer_count))
                    channel.close()
                except pika.exceptions.ChannelClosedByBroker:  # not declared yet: nothing in it
                    counts[queue] = (0, 0)
    finally:
        connection.close()
    return counts


def _api_tls(parts: SplitResult) -> ssl.SSLContext | None:
    """For ``https://``: the server's certificate verified against ``?cafile=`` (or the system's CAs)."""
    if parts.scheme != "https":
        return None
    return ssl.create_default_context(cafile=dict(parse_qsl(parts.query)).get("cafile"))


def _management_get(settings: Settings, path: str, query: str = "") -> Any | None:
    """The JSON the management API answers for ``/api/queues/<vhost>`` + ``path``; ``None`` when
    it answers 404 (a queue not declared yet). Several API URLs (one per cluster node) are tried
    in turn until one answers.

    Raises:
        ServiceUnavailable: no API URL can be reached, or one refuses the credentials.
    """
    assert settings.rabbitmq_api_url is not None
    vhost = urlsplit(settings.broker_urls[0]).path.lstrip("/") or "%2F"
    *others, last = split_urls(settings.rabbitmq_api_url)
    for api_url in others:
        with contextlib.suppress(ServiceUnavailable):  # that node is down: the next one may answer
            return _management_request(api_url, f"/api/queues/{vhost}{path}", query)
    return _management_request(last, f"/api/queues/{vhost}{path}", query)


def _management_request(api_url: str, path: str, query: str) -> Any | None:
    """One GET of ``path`` on the management API at ``api_url`` (its credentials sent as Basic auth).

    Raises:
        ServiceUnavailable: no answer, or an HTTP error other than 404.
    """
    # Imported here: urllib.request brings http.client and email parsing into every worker
    # process (through the reconciler, which counts queues with pika only).
    from urllib.error import HTTPError, URLError
    from urllib.request import Request, urlopen

    parts = urlsplit(api_url)
    netloc = (parts.hostname or "127.0.0.1") + (f":{parts.port}" if parts.port else "")
    url = urlunsplit((parts.scheme, netloc, path, query, ""))
    request = Request(url)  # noqa: S310 -- http(s) only, checked when the settings were built
    if parts.username:
        token = base64.b64encode(
            f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        ).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        # S310: the scheme is http(s), checked when the settings were built.
        with urlopen(request, timeout=DEFAULT_CONNECT_TIMEOUT, context=_api_tls(parts)) as response:  # noqa: S310
            return json.load(response)
    except HTTPError as exc:
        if exc.code == 404:
            return None
        raise ServiceUnavailable("RabbitMQ management API", mask_url(api_url), str(exc)) from None
    except (URLError, OSError, ValueError) as exc:
        raise ServiceUnavailable("RabbitMQ management API", mask_url(api_url), explained(exc)) from None


def _management_figures(settings: Settings, queue: str) -> dict[str, Any]:
    """Unacknowledged messages and publish/deliver rates of one queue, from the management API.

    Raises:
        ServiceUnavailable: the API cannot be reached or refuses the credentials.
    """
    data = _management_get(settings, f"/{quote(queue, safe='')}")
    if data is None:  # not declared yet
        return {"unacked": 0, "publish_rate": 0.0, "deliver_rate": 0.0}
    stats = data.get("message_stats") or {}
    return {
        "unacked": int(data.get("messages_unacknowledged", 0)),
        "publish_rate": round(float((stats.get("publish_details") or {}).get("rate", 0.0)), 2),
        "deliver_rate": round(float((stats.get("deliver_get_details") or {}).get("rate", 0.0)), 2),
    }


@dataclass(frozen=True)
class ManagementQueue:
    """One queue as the management API's last statistics sample shows it."""

    ready: int
    unacked: int
    consumers: int


def management_queues(settings: Settings, prefix: str) -> dict[str, ManagementQueue]:
    """Every queue of the broker's virtual host whose name starts with ``prefix``, in one request.

    The figures come from one statistics sample of RabbitMQ (taken every 5 s by default), so
    ready and unacknowledged counts agree with each other.

    Raises:
        ServiceUnavailable: the API is not configured, cannot be reached or refuses the credentials.
    """
    if settings.rabbitmq_api_url is None:
        raise ServiceUnavailable(
            "RabbitMQ management API", "(not configured)", "set CONVEYOR_RABBITMQ_API_URL"
        )
    data = _management_get(settings, "", "columns=name,messages_ready,messages_unacknowledged,consumers")
    if data is None:
        raise ServiceUnavailable(
            "RabbitMQ management API", mask_url(settings.rabbitmq_api_url), "the virtual host is unknown"
        )
    return {
        str(item["name"]): ManagementQueue(
            ready=int(item.get("messages_ready") or 0),
            unacked=int(item.get("messages_unacknowledged") or 0),
            consumers=int(item.get("consumers") or 0),
        )
        for item in data
        if isinstance(item, dict) and str(item.get("name", "")).startswith(prefix)
    }
