"""How a job is delivered (its idempotency key, delay, priority, retry policy), apart from its payload."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from jobs.defaults import MAX_BACKOFF, MAX_DELAY
from jobs.storable import check_int, check_seconds, check_storable

#: Option names that ``enqueue`` keeps for itself; a payload cannot use them.
DELIVERY_OPTIONS = (
    "idempotency_key",
    "delay",
    "priority",
    "max_retries",
    "min_backoff",
    "max_backoff",
    "traceparent",
    "session",
)
_MAX_IDEMPOTENCY_KEY = 255


@dataclass(frozen=True)
class DeliveryOptions:
    """How a job is delivered, apart from what it does (its payload)."""

    idempotency_key: str | None = None
    delay: float | timedelta | None = None
    priority: int | None = None
    max_retries: int | None = None
    min_backoff: float | None = None
    max_backoff: float | None = None
    #: A W3C ``traceparent`` to run the job in (by default: the current OpenTelemetry span's);
    #: a malformed one is dropped with a warning (``jobs/tracing.py``).
    traceparent: str | None = None

    def delay_ms(self) -> int | None:
        if self.delay is None:
            return None
        seconds = self.delay.total_seconds() if isinstance(self.delay, timedelta) else float(self.delay)
        return int(seconds * 1000) if seconds > 0 else None

    def check(self, max_priority: int | None) -> None:
        """Raises ``ValueError`` naming the bad option (also for values the store or the clock
        cannot hold: NaN, infinity, ``timedelta.max``, ``max_retries`` past 32 bits)."""
        key = self.idempotency_key
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= _MAX_IDEMPOTENCY_KEY):
            raise ValueError(f"idempotency_key must be a non-empty string of at most {_MAX_IDEMPOTENCY_KEY}")
        if key is not None:
            check_storable(key, "idempotency_key")
        if self.delay is not None:
            delay = self.delay.total_seconds() if isinstance(self.delay, timedelta) else self.delay
            check_seconds("delay", delay, high=MAX_DELAY)
        if self.priority is not None:
            check_int("priority", self.priority, high=max_priority or 255)
        if self.max_retries is not None:
            check_int("max_retries", self.max_retries)
        for name in ("min_backoff", "max_backoff"):
            value = getattr(self, name)
            if value is not None:
                check_seconds(name, value, high=MAX_BACKOFF)
        if (
            self.min_backoff is not None
            and self.max_backoff is not None
            and self.min_backoff > self.max_backoff
        ):
            raise ValueError("min_backoff must not exceed max_backoff")

    def message_options(self) -> dict[str, Any]:
        """Dramatiq's per-message options (milliseconds, as its ``Retries`` middleware reads them)."""
        options: dict[str, Any] = {}
        if self.max_retries is not None:
            options["max_retries"] = self.max_retries
        if self.min_backoff is not None:
            options["min_backoff"] = int(self.min_backoff * 1000)
        if self.max_backoff is not None:
            options["max_backoff"] = int(self.max_backoff * 1000)
        if self.priority is not None:
            options["broker_priority"] = self.priority
        return options
