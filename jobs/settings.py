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
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

from jobs import defaults
from jobs.errors import SettingsError
from jobs.keyring import Keyring

ENV_PREFIX = "CONVEYOR_"

# A namespace becomes part of queue names, so it must satisfy Dramatiq's queue-name rule.
_NAMESPACE_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]{0,62}$")

_URL_SCHEMES: dict[str, tuple[str, ...]] = {
    "broker_url": ("amqp", "amqps", "memory"),
    "database_url": ("postgresql", "postgresql+psycopg", "sqlite"),
    "redis_url": ("redis", "rediss", "unix"),
    "smtp_url": ("smtp", "smtps", "file"),
}


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***`` (the user name stays)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:***"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{userinfo}@{host}" + (f":{parts.port}" if _safe_port(parts) else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _safe_port(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


@dataclass(frozen=True)
class Settings:
    """Conveyor's configuration. Build it with :meth:`from_env`; passwords never appear in ``repr``."""

    broker_url: str = defaults.DEFAULT_BROKER_URL
    database_url: str = defaults.DEFAULT_DATABASE_URL
    redis_url: str = defaults.DEFAULT_REDIS_URL
    smtp_url: str = defaults.DEFAULT_SMTP_URL
    namespace: str = defaults.DEFAULT_NAMESPACE
    templates_dir: str | None = None
    #: RabbitMQ ``x-max-priority`` for Conveyor's queues; ``None`` keeps Dramatiq's plain queues.
    max_priority: int | None = None
    #: Heartbeat negotiated with RabbitMQ, in seconds.
    broker_heartbeat: int = defaults.DEFAULT_BROKER_HEARTBEAT
    #: ``From`` of every email.
    email_from: str = defaults.DEFAULT_EMAIL_FROM
    #: Emails per period across all replicas, e.g. ``20/s`` or ``1000/h``; ``None``: unlimited.
    email_rate: str | None = None
    #: Most recipients (to + cc + bcc) one email may have.
    email_max_recipients: int = defaults.DEFAULT_EMAIL_MAX_RECIPIENTS
    #: Largest image input, in bytes and in pixels.
    image_max_bytes: int = defaults.DEFAULT_IMAGE_MAX_BYTES
    image_max_pixels: int = defaults.DEFAULT_IMAGE_MAX_PIXELS
    #: JPEG draft mode: decode big JPEGs at a reduced scale when every output is small.
    image_draft: bool = True
    #: RabbitMQ's management API (``http://user:pass@host:15672``): adds unacknowledged counts and
    #: rates to ``conveyor queues``. ``None``: RabbitMQ is read through AMQP alone.
    rabbitmq_api_url: str | None = None
    #: The folder artifacts' bytes go to: ``file:///DIR`` (``file:DIR`` is relative to the working
    #: directory). Their metadata stays in the database.
    artifact_url: str = defaults.DEFAULT_ARTIFACT_URL
    #: Seconds an identical report request reuses the previous one's artifacts.
    report_cache_ttl: int = defaults.DEFAULT_REPORT_CACHE_TTL
    #: Seconds a worker process stays listed by ``conveyor workers`` after its last heartbeat;
    #: it beats every ``worker_ttl // 3`` seconds, so two missed beats are tolerated.
    worker_ttl: int = 30
    #: RabbitMQ queue type: ``classic`` (Dramatiq's own declaration) or ``quorum`` (replicated, for a
    #: cluster; each message dead-lettered after ``delivery_limit`` deliveries).
    queue_type: str = "classic"
    delivery_limit: int = defaults.DEFAULT_DELIVERY_LIMIT
    #: Seconds a producer keeps retrying one enqueue while RabbitMQ is unreachable (e.g. restarting).
    enqueue_timeout: float = defaults.DEFAULT_ENQUEUE_TIMEOUT
    #: Seconds a worker process may be unable to consume before it exits (non-zero) to be restarted.
    consume_timeout: float = defaults.DEFAULT_CONSUME_TIMEOUT
    #: Seconds between two sweeps for jobs left ``running`` or ``queued`` with no message to run them.
    reconcile_interval: float = defaults.DEFAULT_RECONCILE_INTERVAL
    #: AES-256-GCM keys for data at rest, ``id:base64-32-bytes`` comma-separated, the current one
    #: first (SPEC §10); ``None``: stored in the clear. Never shown in ``repr``.
    encryption_keys: str | None = None
    # issue 15: gdpr (retention)
    #: Days a finished job (with its attempts, artifacts and files) is kept before the scheduler's
    #: leader deletes it; ``None``: kept until pruned by hand.
    retention_days: int | None = None
    #: Per-kind overrides, ``(kind, days)`` pairs: ``CONVEYOR_RETENTION_DAYS_EMAIL=30`` (one variable
    #: per kind) or ``CONVEYOR_RETENTION_DAYS_BY_KIND=email=30,report=365``.
    retention_days_by_kind: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        for name, schemes in _URL_SCHEMES.items():
            _check_url(name, getattr(self, name), schemes)
        _check_smtp_parameters(self.smtp_url)
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
        if self.rabbitmq_api_url is not None:
            _check_url("rabbitmq_api_url", self.rabbitmq_api_url, ("http", "https"))
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
        for name in ("enqueue_timeout", "consume_timeout", "reconcile_interval"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be a positive number of seconds")
        if self.encryption_keys is not None:
            Keyring.parse(self.encryption_keys)
        if self.worker_ttl < 3:
            raise SettingsError("CONVEYOR_WORKER_TTL must be at least 3 seconds (workers beat every TTL/3 s)")
        _check_retention(self.retention_days, self.retention_days_by_kind)

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
                per_kind[kind.group(1).lower()] = _retention_days(key, raw)  # issue 15: gdpr
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
    def is_embedded(self) -> bool:
        """True when the broker lives in this process (``memory://``)."""
        return self.broker_url.startswith("memory:")

    def queue_name(self, suffix: str) -> str:
        """The namespaced name of a queue, e.g. ``conveyor.email``."""
        return f"{self.namespace}.{suffix}"

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={_shown(f.name, v)}"
            for f in dataclasses.fields(self)
            if (v := getattr(self, f.name)) is not None
        )
        return f"Settings({shown})"

    __str__ = __repr__


#: Settings that are secrets as a whole: ``repr`` shows ``***`` instead.
SECRET_FIELDS = frozenset({"encryption_keys"})


def _shown(name: str, value: Any) -> str:
    if name in SECRET_FIELDS:
        return "'***'"
    return mask_url(value) if name.endswith("_url") else repr(value)


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
    ):
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not an integer") from None
    if name in ("enqueue_timeout", "consume_timeout", "reconcile_interval"):
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a number of seconds") from None
    if name == "retention_days":
        return _retention_days(f"{ENV_PREFIX}RETENTION_DAYS", raw) if raw else None
    if name == "retention_days_by_kind":
        return _retention_pairs(raw)
    if name in ("templates_dir", "email_rate", "rabbitmq_api_url", "encryption_keys"):
        return raw or None
    if name == "artifact_url":
        return raw or defaults.DEFAULT_ARTIFACT_URL
    return raw


_SMTP_PARAMETERS = {"starttls", "timeout", "cafile", "verify", "reuse"}


def _check_smtp_parameters(url: str) -> None:
    unknown = {key for key, _ in parse_qsl(urlsplit(url).query)} - _SMTP_PARAMETERS
    if unknown:
        raise SettingsError(
            f"CONVEYOR_SMTP_URL: unknown parameter(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_SMTP_PARAMETERS))}"
        )


def _check_url(name: str, url: str, schemes: tuple[str, ...]) -> None:
    env = f"{ENV_PREFIX}{name.upper()}"
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


# ---------------------------------------------------------------- issue 15: gdpr (retention)

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
