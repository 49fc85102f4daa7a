"""One typed settings object, built once at start-up from ``CONVEYOR_*`` variables.

Nothing in Conveyor reads the environment anywhere else: the CLI, the worker
and :class:`producers.Client` each call :meth:`Settings.from_env` (or take a
``Settings``) and hand it down.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

from jobs import defaults
from jobs.errors import SettingsError
from jobs.keyring import Keyring
from jobs.logs import PORT_THEN_QUERY, mask_secrets

ENV_PREFIX = "CONVEYOR_"
#: The most messages a worker thread may take ahead (``CONVEYOR_PREFETCH``).
MAX_PREFETCH = 1000

# A namespace becomes part of queue names, so it must satisfy Dramatiq's queue-name rule.
_NAMESPACE_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]{0,62}$")

_URL_SCHEMES: dict[str, tuple[str, ...]] = {
    "broker_url": ("amqp", "amqps", "memory"),
    "database_url": ("postgresql", "postgresql+psycopg", "sqlite"),
    "redis_url": ("redis", "rediss", "unix"),
    "smtp_url": ("smtp", "smtps", "file"),
}


def mask_url(url: str) -> str:
    """Return ``url`` with its password, and the values of credential-like query parameters
    (``?password=``, ``&token=``, ``sslpassword=``…), replaced by ``***`` (the user name stays).

    A password holding an unencoded ``/``, ``?`` or ``#`` (``amqp://u:pa/ss@host``) makes the
    URL parser read the wrong host; it is masked up to its ``@`` all the same. A list of URLs
    (``amqp://a,amqp://b``, the cluster nodes of ``CONVEYOR_BROKER_URL``) is masked URL by URL.
    """
    urls = split_urls(url)
    if len(urls) > 1:
        return ",".join(mask_url(one) for one in urls)
    userinfo = _hidden_userinfo(url)
    if userinfo is not None:
        prefix, user, rest = userinfo
        return mask_secrets(f"{prefix}{user}:***@{rest}")
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return mask_secrets(url)
    userinfo_shown = f"{parts.username or ''}:***"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{userinfo_shown}@{host}" + (f":{parts.port}" if _safe_port(parts) else "")
    return mask_secrets(urlunsplit(parts._replace(netloc=netloc)))


_SCHEME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def split_urls(text: str) -> list[str]:
    """The URLs of a comma-separated list (``amqp://a:5672/,amqp://b:5672/``), or ``[text]`` when
    a piece is not a URL of its own (a comma inside one URL's query or password)."""
    pieces = [piece.strip() for piece in text.split(",")]
    if len(pieces) > 1 and all(_SCHEME_RE.match(piece) for piece in pieces):
        return pieces
    return [text]


# scheme://user:password@rest where the password holds a "/", "?" or "#" the parser stops at.
_MISPARSED_USERINFO = re.compile(
    r"^(?P<prefix>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/?#@]*):(?P<password>[^@]*[/?#][^@]*)@(?P<rest>.*)$",
    re.DOTALL,
)


def _hidden_userinfo(url: str) -> tuple[str, str, str] | None:
    """``(prefix, user, rest)`` when ``url`` has a password the URL parser would not see whole
    (an unencoded ``/``, ``?`` or ``#`` in it); ``None`` otherwise."""
    match = _MISPARSED_USERINFO.match(url)
    if match is None or re.match(PORT_THEN_QUERY, match["password"]):
        return None  # no such password, or "host:port/path?x=a@b": a port, not a password
    return match["prefix"], match["user"], match["rest"]


def _safe_port(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


@dataclass(frozen=True)
class Settings:
    """Conveyor's configuration. Build it with :meth:`from_env`; passwords never appear in ``repr``."""

    #: RabbitMQ: ``amqp://user:password@host:port/vhost``, or ``amqps://`` for TLS (``cafile=``,
    #: ``certfile=``, ``keyfile=``). Other query parameters go to pika as they are. The nodes of a
    #: cluster are given comma-separated (``amqp://…@mq-a:5672/,amqp://…@mq-b:5672/``): every
    #: connection tries them in turn, and each URL is checked alone (same virtual host for all).
    #: ``memory://`` is the in-process broker of the demo and the unit tests; ``conveyor worker``
    #: refuses it.
    broker_url: str = defaults.DEFAULT_BROKER_URL
    #: The job store: ``postgresql+psycopg://`` or ``postgresql://`` (psycopg 3; libpq parameters
    #: such as ``sslmode=verify-full&sslrootcert=PATH`` are passed on). ``sqlite:///PATH`` serves
    #: the demo only.
    database_url: str = defaults.DEFAULT_DATABASE_URL
    #: Redis: ``redis://``, ``rediss://`` (TLS: ``ssl_ca_certs=``, ``ssl_certfile=``,
    #: ``ssl_keyfile=``) or ``unix://``. It holds the email rate limit, the worker registry and
    #: the report cache; while it is down, jobs still run (fail open). Worker processes write the
    #: registry with a small client of their own that reads these and ``db=``, ``username=``,
    #: ``password=``, ``ssl_cert_reqs=``, ``ssl_check_hostname=``; with any other of redis-py's URL
    #: options, they use redis-py for it too.
    redis_url: str = defaults.DEFAULT_REDIS_URL
    #: Where emails go: ``smtp://user:password@host:port``, ``smtps://`` (TLS from the first byte)
    #: or ``file://DIR`` (one ``.eml`` file per message). Parameters: ``starttls=auto`` (upgrade
    #: when the server offers it; ``true`` requires it, ``false`` never), ``timeout=`` (seconds),
    #: ``cafile=``, ``verify=false`` (tests only), ``reuse=false`` (a connection per message),
    #: ``allow_plaintext_auth=true`` (send a password over an unencrypted connection).
    smtp_url: str = defaults.DEFAULT_SMTP_URL
    #: Prefix of queue names (``<namespace>.email``), Redis keys, schedule state and audit rows, so
    #: that environments can share servers: letters, digits, ``_`` and ``-``, starting with a
    #: letter or ``_``, at most 63 characters.
    namespace: str = defaults.DEFAULT_NAMESPACE
    #: A folder searched before the shipped ``templates/`` (email bodies, reports): a file there
    #: overrides the shipped file of the same name.
    templates_dir: str | None = None
    #: RabbitMQ ``x-max-priority`` (1 to 255) of Conveyor's queues, which ``--priority`` needs;
    #: ``None``: plain queues, declared as Dramatiq declares them. Queues that exist must be
    #: deleted before it changes (RabbitMQ refuses a changed declaration); not with quorum queues.
    max_priority: int | None = None
    #: Heartbeat negotiated with RabbitMQ, in seconds (``0`` disables it); a dead peer is noticed
    #: after about two.
    broker_heartbeat: int = defaults.DEFAULT_BROKER_HEARTBEAT
    #: ``From`` of every email; its domain ends each ``Message-ID``.
    email_from: str = defaults.DEFAULT_EMAIL_FROM
    #: Emails per period across all replicas (``20/s``, ``600/m``, ``1000/h``, ``5000/d``), kept in
    #: Redis; ``None``: unlimited.
    email_rate: str | None = None
    #: Most recipients (to + cc + bcc) one email may have.
    email_max_recipients: int = defaults.DEFAULT_EMAIL_MAX_RECIPIENTS
    #: Bytes: the largest image input a job may read.
    image_max_bytes: int = defaults.DEFAULT_IMAGE_MAX_BYTES
    #: Pixels: the largest image input, read from the image's header before it is decoded.
    image_max_pixels: int = defaults.DEFAULT_IMAGE_MAX_PIXELS
    #: JPEG draft mode: decode big JPEGs at a reduced scale when every output is small (much
    #: faster, a little softer).
    image_draft: bool = True
    #: RabbitMQ's management API (``http://user:pass@host:15672``): adds unacknowledged counts and
    #: rates to ``conveyor queues``; a cluster's nodes comma-separated, tried in turn. ``None``:
    #: RabbitMQ is read through AMQP alone.
    rabbitmq_api_url: str | None = None
    #: The folder artifacts' bytes go to: ``file:///DIR`` (``file:DIR`` is relative to the working
    #: directory). Every replica and producer must see the same folder; the artifacts' metadata
    #: stays in the database.
    artifact_url: str = defaults.DEFAULT_ARTIFACT_URL
    #: Seconds an identical report request reuses the previous one's artifacts; ``0``: no cache.
    report_cache_ttl: int = defaults.DEFAULT_REPORT_CACHE_TTL
    #: Seconds a worker process stays listed by ``conveyor workers`` after its last heartbeat;
    #: it beats every ``worker_ttl // 3`` seconds, so two missed beats are tolerated.
    worker_ttl: int = 30
    #: Seconds a job runs before its ``running`` state is written. A shorter run is written once,
    #: start and end together, under a claim that keeps any copy of it from running meanwhile;
    #: ``0`` writes ``running`` before every job. At most 1 (SPEC §6: a job that has run for 1 s
    #: shows as ``running``).
    running_after: float = defaults.DEFAULT_RUNNING_AFTER
    #: Messages a worker process takes ahead from each queue, per thread; ``None``: each kind's
    #: own (32 for ``noop``, 8 for ``email``, 2 for ``image``, 1 for ``report``, 2 for a queue of
    #: the application's own actors).
    prefetch: int | None = None
    #: RabbitMQ queue type: ``classic`` (Dramatiq's own declaration) or ``quorum`` (replicated, for a
    #: cluster; a message is dead-lettered after ``CONVEYOR_DELIVERY_LIMIT`` deliveries).
    queue_type: str = "classic"
    #: Quorum queues only: deliveries of one message before RabbitMQ dead-letters it.
    delivery_limit: int = defaults.DEFAULT_DELIVERY_LIMIT
    #: Seconds a producer keeps retrying one enqueue while RabbitMQ is unreachable (e.g. restarting),
    #: then raises ``ServiceUnavailable``. Shell commands (``conveyor enqueue``) fail at once instead.
    enqueue_timeout: float = defaults.DEFAULT_ENQUEUE_TIMEOUT
    #: Seconds a worker process may be unable to consume before it exits (code 4) to be restarted.
    consume_timeout: float = defaults.DEFAULT_CONSUME_TIMEOUT
    #: Seconds between two sweeps for jobs left ``running`` or ``queued`` with no message to run them.
    reconcile_interval: float = defaults.DEFAULT_RECONCILE_INTERVAL
    #: AES-256-GCM keys for data at rest, ``id:base64-32-bytes`` comma-separated, the current one
    #: first; ``None``: stored in the clear. Shown as ``***`` (``conveyor config``, ``repr``).
    encryption_keys: str | None = None
    #: Bytes: the largest payload a job may carry (its compact JSON in UTF-8), checked at enqueue
    #: and again by the worker for messages of other producers.
    max_payload_bytes: int = defaults.DEFAULT_MAX_PAYLOAD_BYTES
    #: Pixels: the largest image any operation may make (every intermediate and every output).
    image_max_output_pixels: int = defaults.DEFAULT_IMAGE_MAX_OUTPUT_PIXELS
    #: Bytes: the largest encoded image output.
    image_max_output_bytes: int = defaults.DEFAULT_IMAGE_MAX_OUTPUT_BYTES
    #: HMAC-SHA256 key producers sign messages with and workers verify them with (at least 32
    #: characters); ``None``: messages are neither signed nor checked. Shown as ``***``.
    signing_key: str | None = None
    #: The key before a rotation: workers still accept what it signed (never used to sign).
    signing_key_previous: str | None = None
    #: ISO 8601 time (UTC unless it names an offset) after which the previous key is refused.
    signing_previous_until: str | None = None
    #: Workers run unsigned messages (plain Dramatiq producers, during a migration) with a
    #: warning; a wrong signature is still refused.
    accept_unsigned: bool = False
    #: Days a finished job (with its attempts, artifacts and files) is kept before the scheduler's
    #: leader deletes it; ``None``: kept until pruned by hand.
    retention_days: int | None = None
    #: Per-kind retentions, ``(kind, days)`` pairs, set in one variable
    #: (``CONVEYOR_RETENTION_DAYS_BY_KIND=email=30,report=365``) or one per kind
    #: (``CONVEYOR_RETENTION_DAYS_EMAIL=30``, which wins).
    retention_days_by_kind: tuple[tuple[str, int], ...] = ()
    #: TCP port of the worker replica's Prometheus endpoint (``/metrics`` and ``/healthz``, served by
    #: the supervisor for all its processes); ``None``: no endpoint. ``conveyor worker --metrics-port``
    #: overrides it.
    metrics_port: int | None = None
    #: Address the metrics endpoint binds to; ``0.0.0.0`` exposes it beyond this host.
    metrics_host: str = "127.0.0.1"
    #: ``text`` (human-readable lines) or ``json`` (one JSON object per line, for log shippers).
    log_format: str = "text"
    #: The web dashboard's secret (``conveyor web``): without it the dashboard is read-only and
    #: binds only to loopback; with it, actions (retry, cancel, requeue, purge, pause) need it as
    #: ``Authorization: Bearer …`` or through the login form. At least 16 characters.
    web_token: str | None = None

    def __post_init__(self) -> None:
        _check_input_limits(self)
        for name, schemes in _URL_SCHEMES.items():
            if name != "broker_url":
                _check_url(name, getattr(self, name), schemes)
        _check_broker_urls(self.broker_urls)
        _check_smtp_parameters(self.smtp_url)
        _check_tls_parameters(self)
        if not _NAMESPACE_RE.match(self.namespace):
            raise SettingsError(
                f"CONVEYOR_NAMESPACE={self.namespace!r} is invalid: use letters, digits, '_' or '-', "
                "starting with a letter or '_' (at most 63 characters)"
            )
        if self.max_priority is not None and not 1 <= self.max_priority <= 255:
            raise SettingsError(f"CONVEYOR_MAX_PRIORITY={self.max_priority} must be between 1 and 255")
        if self.broker_heartbeat < 0:
            raise SettingsError("CONVEYOR_BROKER_HEARTBEAT must be 0 (disabled) or a number of seconds")
        if self.email_rate is not None:
            parse_rate(self.email_rate)
        for api_url in split_urls(self.rabbitmq_api_url or ""):
            if api_url:
                _check_url("rabbitmq_api_url", api_url, ("http", "https"))
        _check_url("artifact_url", self.artifact_url, ("file",))
        if not urlsplit(self.artifact_url).path:
            raise SettingsError(f"CONVEYOR_ARTIFACT_URL={self.artifact_url!r} names no folder")
        if self.report_cache_ttl < 0:
            raise SettingsError("CONVEYOR_REPORT_CACHE_TTL must be 0 (no cache) or a number of seconds")
        if self.image_max_bytes < 1 or self.image_max_pixels < 1:
            raise SettingsError("CONVEYOR_IMAGE_MAX_BYTES and CONVEYOR_IMAGE_MAX_PIXELS must be positive")
        if self.email_max_recipients < 1:
            raise SettingsError("CONVEYOR_EMAIL_MAX_RECIPIENTS must be at least 1")
        if any(c in self.email_from for c in "\r\n") or "@" not in self.email_from:
            raise SettingsError(f"CONVEYOR_EMAIL_FROM={self.email_from!r} is not an email address")
        if self.queue_type not in ("classic", "quorum"):
            raise SettingsError(f"CONVEYOR_QUEUE_TYPE={self.queue_type!r} must be classic or quorum")
        if self.queue_type == "quorum" and self.max_priority is not None:
            raise SettingsError("CONVEYOR_MAX_PRIORITY cannot be used with quorum queues (no priorities)")
        if self.delivery_limit < 1:
            raise SettingsError("CONVEYOR_DELIVERY_LIMIT must be at least 1")
        if not 0 <= self.running_after <= 1:
            raise SettingsError("CONVEYOR_RUNNING_AFTER must be between 0 and 1 second")
        if self.prefetch is not None and not 1 <= self.prefetch <= MAX_PREFETCH:
            raise SettingsError(f"CONVEYOR_PREFETCH must be between 1 and {MAX_PREFETCH} messages a thread")
        for name in ("enqueue_timeout", "consume_timeout", "reconcile_interval"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be a positive number of seconds")
        if self.encryption_keys is not None:
            Keyring.parse(self.encryption_keys)
        if self.worker_ttl < 3:
            raise SettingsError("CONVEYOR_WORKER_TTL must be at least 3 seconds (workers beat every TTL/3 s)")
        _check_image_output_caps(self)
        _check_signing(self)
        _check_retention(self.retention_days, self.retention_days_by_kind)
        _check_observability(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Build settings from ``CONVEYOR_*`` variables; keyword ``overrides`` (CLI flags) win.

        Raises:
            SettingsError: an unknown ``CONVEYOR_*`` variable, a malformed URL or value.
        """
        values: dict[str, Any] = {}
        per_kind: dict[str, int] = {}
        known = {f"{ENV_PREFIX}{name.upper()}": name for name in _field_names()}
        for key, raw in environ.items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = known.get(key)
            if name is None and (kind := _RETENTION_KEY_RE.match(key)) is not None:
                per_kind[kind.group(1).lower()] = _retention_days(key, raw)
                continue
            if name is None:
                hint = difflib.get_close_matches(key, known, n=1)
                suggestion = f" (did you mean {hint[0]}?)" if hint else ""
                raise SettingsError(
                    f"unknown setting {key}{suggestion}; known settings: {', '.join(sorted(known))}"
                )
            values[name] = _convert(name, raw)
        if per_kind:
            values["retention_days_by_kind"] = tuple(
                sorted({**dict(values.get("retention_days_by_kind", ())), **per_kind}.items())
            )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with some fields replaced (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def broker_urls(self) -> tuple[str, ...]:
        """The RabbitMQ nodes of ``broker_url``, in the order connections try them."""
        return tuple(split_urls(self.broker_url))

    @property
    def is_embedded(self) -> bool:
        """True when the broker lives in this process (``memory://``)."""
        return self.broker_url.startswith("memory:")

    def queue_name(self, suffix: str) -> str:
        """The namespaced name of a queue, e.g. ``conveyor.email``."""
        return f"{self.namespace}.{suffix}"

    def masked(self) -> dict[str, Any]:
        """Every field, for display: secrets (:data:`SECRET_FIELDS`) as ``***``, URLs with their
        passwords and credential parameters masked."""
        return {
            f.name: None if v is None else _masked_value(f.name, v)
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={_shown(f.name, v)}"
            for f in dataclasses.fields(self)
            if (v := getattr(self, f.name)) is not None
        )
        return f"Settings({shown})"

    __str__ = __repr__


#: Settings that are secrets as a whole: ``repr`` shows ``***`` instead.
SECRET_FIELDS = frozenset({"encryption_keys", "signing_key", "signing_key_previous", "web_token"})


def _shown(name: str, value: Any) -> str:
    if name in SECRET_FIELDS:
        return "'***'"
    return mask_url(value) if name.endswith("_url") else repr(value)


def _masked_value(name: str, value: Any) -> Any:
    if name in SECRET_FIELDS:
        return "***"
    if isinstance(value, str):
        return mask_url(value) if name.endswith("_url") else mask_secrets(value)
    return value


def _field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Settings)]


_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$")
_RATE_PERIODS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}


def _check_image_output_caps(settings: Settings) -> None:
    """The output caps are positive numbers."""
    for name in ("image_max_output_pixels", "image_max_output_bytes"):
        if getattr(settings, name) < 1:
            raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be a positive number")


def parse_rate(text: str) -> tuple[int, float]:
    """``"20/s"`` → ``(20, 1.0)``: a count and a period in seconds.

    Raises:
        SettingsError: not ``N/s``, ``N/m``, ``N/h`` or ``N/d`` with N ≥ 1.
    """
    match = _RATE_RE.match(text)
    if not match or int(match.group(1)) < 1:
        raise SettingsError(f"rate {text!r} must look like 20/s, 600/m, 1000/h or 5000/d")
    return int(match.group(1)), float(_RATE_PERIODS[match.group(2)])


def _convert(name: str, raw: str) -> Any:
    if name in _SIGNING_FIELDS:
        return _convert_signing(name, raw)
    if name == "image_draft":
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} must be true or false")
        return raw.lower() in ("1", "true", "yes", "on")
    if name in (
        "max_priority",
        "broker_heartbeat",
        "email_max_recipients",
        "image_max_bytes",
        "image_max_pixels",
        "report_cache_ttl",
        "worker_ttl",
        "delivery_limit",
        "max_payload_bytes",
        "image_max_output_pixels",
        "image_max_output_bytes",
        "metrics_port",
        "prefetch",
    ):
        if name in ("metrics_port", "prefetch") and not raw:
            return None
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not an integer") from None
    if name in ("enqueue_timeout", "consume_timeout", "reconcile_interval", "running_after"):
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a number of seconds") from None
    if name == "retention_days":
        return _retention_days(f"{ENV_PREFIX}RETENTION_DAYS", raw) if raw else None
    if name == "retention_days_by_kind":
        return _retention_pairs(raw)
    if name in ("templates_dir", "email_rate", "rabbitmq_api_url", "encryption_keys", "web_token"):
        return raw or None
    if name == "artifact_url":
        return raw or defaults.DEFAULT_ARTIFACT_URL
    return raw


def _check_input_limits(settings: Settings) -> None:
    """The payload cap is a positive size PostgreSQL's ``jsonb`` can hold."""
    limit = settings.max_payload_bytes
    if (
        isinstance(limit, bool)
        or not isinstance(limit, int)
        or not 1 <= limit <= defaults.MAX_PAYLOAD_BYTES_LIMIT
    ):
        raise SettingsError(
            f"CONVEYOR_MAX_PAYLOAD_BYTES={limit!r} must be between 1 and {defaults.MAX_PAYLOAD_BYTES_LIMIT}"
        )


_SIGNING_FIELDS = ("signing_key", "signing_key_previous", "signing_previous_until", "accept_unsigned")


def _convert_signing(name: str, raw: str) -> Any:
    if name == "accept_unsigned":
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off", ""):
            raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} must be true or false")
        return raw.lower() in ("1", "true", "yes", "on")
    return raw or None


def _check_signing(settings: Settings) -> None:
    """The signing keys: long enough, distinct, and a previous key only beside a current one."""
    current, previous = settings.signing_key, settings.signing_key_previous
    for name, key in (("SIGNING_KEY", current), ("SIGNING_KEY_PREVIOUS", previous)):
        if key is not None and len(key) < defaults.MIN_SIGNING_KEY_LENGTH:
            # The length only, never the key: settings errors are printed.
            raise SettingsError(
                f"{ENV_PREFIX}{name} is {len(key)} characters long: use a secret of at least "
                f"{defaults.MIN_SIGNING_KEY_LENGTH} (e.g. from "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
    if current is None and (previous is not None or settings.accept_unsigned):
        raise SettingsError(
            f"{ENV_PREFIX}SIGNING_KEY_PREVIOUS and {ENV_PREFIX}ACCEPT_UNSIGNED need {ENV_PREFIX}SIGNING_KEY"
        )
    if previous is not None and previous == current:
        raise SettingsError(f"{ENV_PREFIX}SIGNING_KEY_PREVIOUS is the same as {ENV_PREFIX}SIGNING_KEY")
    until = settings.signing_previous_until
    if until is not None:
        if previous is None:
            raise SettingsError(f"{ENV_PREFIX}SIGNING_PREVIOUS_UNTIL needs {ENV_PREFIX}SIGNING_KEY_PREVIOUS")
        # Imported here: jobs.signing imports dramatiq, which the worker supervisor does not load.
        from jobs.signing import parse_until

        try:
            parse_until(until)
        except ValueError:
            raise SettingsError(
                f"{ENV_PREFIX}SIGNING_PREVIOUS_UNTIL={until!r} is not an ISO 8601 time "
                "(e.g. 2026-12-31T00:00:00Z)"
            ) from None


_SMTP_PARAMETERS = {"starttls", "timeout", "cafile", "verify", "reuse", "allow_plaintext_auth"}


def _check_smtp_parameters(url: str) -> None:
    unknown = {key for key, _ in parse_qsl(urlsplit(url).query)} - _SMTP_PARAMETERS
    if unknown:
        raise SettingsError(
            f"CONVEYOR_SMTP_URL: unknown parameter(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_SMTP_PARAMETERS))}"
        )


def _check_url(name: str, url: str, schemes: tuple[str, ...]) -> None:
    env = f"{ENV_PREFIX}{name.upper()}"
    if _hidden_userinfo(url) is not None:
        raise SettingsError(
            f"{env}={mask_url(url)} is not a valid URL: a '/', '?' or '#' in its password must be "
            "percent-encoded (%2F, %3F, %23)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SettingsError(f"{env}={mask_url(url)} is not a valid URL: {exc}") from None
    if parts.scheme not in schemes:
        raise SettingsError(
            f"{env}={mask_url(url)} must start with one of: {', '.join(s + '://' for s in schemes)}"
        )
    needs_host = parts.scheme not in ("memory", "sqlite", "file", "unix")
    if needs_host and not parts.hostname:
        raise SettingsError(f"{env}={mask_url(url)} names no host")
    if port is not None and not 0 < port < 65536:
        raise SettingsError(f"{env}={mask_url(url)} has an invalid port")


def _check_broker_urls(urls: tuple[str, ...]) -> None:
    """Every node's URL passes the checks of one URL; ``memory://`` stands alone; the nodes of
    one cluster share a virtual host (a different one is a typo, not a failover)."""
    for url in urls:
        _check_url("broker_url", url, _URL_SCHEMES["broker_url"])
    if len(urls) == 1:
        return
    if any(urlsplit(url).scheme == "memory" for url in urls):
        raise SettingsError("CONVEYOR_BROKER_URL: memory:// cannot be one of several URLs")
    vhosts = {urlsplit(url).path.lstrip("/") or "%2F" for url in urls}
    if len(vhosts) > 1:
        raise SettingsError(
            "CONVEYOR_BROKER_URL: the cluster's URLs name different virtual hosts "
            f"({', '.join(sorted(vhosts))})"
        )


#: Conveyor's own parameters of an ``amqps://`` URL (pika never sees them): the CA file that
#: verifies RabbitMQ's certificate, and a client certificate (its key in ``keyfile`` or in it).
BROKER_TLS_PARAMETERS = frozenset({"cafile", "certfile", "keyfile"})

#: ``starttls=`` values of an SMTP URL: upgrade when the server offers it (``auto``, the default),
#: always (a server without STARTTLS is refused), or never.
SMTP_STARTTLS_VALUES = {
    "auto": "auto",
    **dict.fromkeys(("1", "true", "yes", "on"), "always"),
    **dict.fromkeys(("0", "false", "no", "off"), "never"),
}

#: URL parameters naming a file that TLS reads (CA, client certificate, key), per setting.
_TLS_FILE_PARAMETERS = {
    "broker_url": ("cafile", "certfile", "keyfile"),
    "database_url": ("sslrootcert", "sslcert", "sslkey"),
    "redis_url": ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"),
    "smtp_url": ("cafile",),
    "rabbitmq_api_url": ("cafile",),
}


def _check_tls_parameters(settings: Settings) -> None:
    """TLS parameters make sense where they are: the broker's only on ``amqps://``, ``starttls=``
    one of its values (the files they name are checked by :func:`check_tls_files`)."""
    for url in settings.broker_urls:
        broker = urlsplit(url)
        given = {key for key, _ in parse_qsl(broker.query)} & BROKER_TLS_PARAMETERS
        if given and broker.scheme != "amqps":
            raise SettingsError(
                f"CONVEYOR_BROKER_URL={mask_url(url)}: {', '.join(sorted(given))} are for amqps:// URLs only"
            )
        if "keyfile" in given and "certfile" not in given:
            raise SettingsError(
                f"CONVEYOR_BROKER_URL={mask_url(url)}: keyfile= needs certfile= (the client certificate)"
            )
    starttls = dict(parse_qsl(urlsplit(settings.smtp_url).query)).get("starttls", "auto")
    if starttls.lower() not in SMTP_STARTTLS_VALUES:
        raise SettingsError(f"CONVEYOR_SMTP_URL: starttls={starttls!r} must be auto, true or false")


def check_tls_files(settings: Settings) -> None:
    """Every CA, certificate and key file that a URL names exists: a typo fails when a worker
    starts rather than at its first connection. (Not checked when settings are built: they may
    be built on a host that only passes them on.)

    Raises:
        SettingsError: a file is missing.
    """
    for name, keys in _TLS_FILE_PARAMETERS.items():
        for url in split_urls(getattr(settings, name) or ""):
            for key, value in parse_qsl(urlsplit(url).query):
                # libpq's sslrootcert=system means the system's CAs, not a file.
                if key in keys and value != "system" and not Path(value).expanduser().is_file():
                    raise SettingsError(
                        f"{ENV_PREFIX}{name.upper()}={mask_url(url)}: {key} {value!r} is not a file"
                    )


# ---------------------------------------------------------------- retention

#: ``CONVEYOR_RETENTION_DAYS_<KIND>``: a per-kind retention (the kind is checked by the scheduler,
#: which knows the registered kinds).
_RETENTION_KEY_RE = re.compile(r"^CONVEYOR_RETENTION_DAYS_([A-Z][A-Z0-9_]{0,63})$")
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _retention_days(key: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not a whole number of days") from None


def _retention_pairs(raw: str) -> tuple[tuple[str, int], ...]:
    """``email=30,report=365`` → ``(("email", 30), ("report", 365))``."""
    pairs: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        kind, sep, days = item.partition("=")
        if not sep:
            raise SettingsError(f"CONVEYOR_RETENTION_DAYS_BY_KIND: {item!r} is not KIND=DAYS")
        pairs[kind.strip().lower()] = _retention_days(f"CONVEYOR_RETENTION_DAYS_{kind.upper()}", days)
    return tuple(sorted(pairs.items()))


def _check_retention(days: int | None, by_kind: tuple[tuple[str, int], ...]) -> None:
    """Whole days of at least 1, and kind names that can be kinds."""
    if days is not None and days < 1:
        raise SettingsError("CONVEYOR_RETENTION_DAYS must be at least 1 (unset: keep jobs)")
    for kind, kind_days in by_kind:
        if not _KIND_RE.match(kind):
            raise SettingsError(f"CONVEYOR_RETENTION_DAYS_{kind.upper()}: {kind!r} is not a job kind name")
        if kind_days < 1:
            raise SettingsError(f"CONVEYOR_RETENTION_DAYS_{kind.upper()} must be at least 1")
    if len({kind for kind, _ in by_kind}) != len(by_kind):
        raise SettingsError("CONVEYOR_RETENTION_DAYS_<KIND>: a kind is given twice")


def _check_observability(settings: Settings) -> None:
    if settings.metrics_port is not None and not 1 <= settings.metrics_port <= 65535:
        raise SettingsError(f"CONVEYOR_METRICS_PORT={settings.metrics_port} must be between 1 and 65535")
    if not settings.metrics_host or any(c.isspace() for c in settings.metrics_host):
        raise SettingsError(f"CONVEYOR_METRICS_HOST={settings.metrics_host!r} is not a host name or address")
    if settings.log_format not in ("text", "json"):
        raise SettingsError(f"CONVEYOR_LOG_FORMAT={settings.log_format!r} must be text or json")
    if settings.web_token is not None and len(settings.web_token) < 16:
        raise SettingsError("CONVEYOR_WEB_TOKEN must be at least 16 characters")
