"""How a job is delivered (its idempotency key, delay, priority, retry policy), apart from its payload."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

#: Option names that ``enqueue`` keeps for itself; a payload cannot use them.
DELIVERY_OPTIONS = ("idempotency_key", "delay", "priority", "max_retries", "min_backoff", "max_backoff")
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

    def delay_ms(self) -> int | None:
        if self.delay is None:
            return None
        seconds = self.delay.total_seconds() if isinstance(self.delay, timedelta) else float(self.delay)
        return int(seconds * 1000) if seconds > 0 else None

    def check(self, max_priority: int | None) -> None:
        """Raises ``ValueError`` naming the bad option."""
        key = self.idempotency_key
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= _MAX_IDEMPOTENCY_KEY):
            raise ValueError(f"idempotency_key must be a non-empty string of at most {_MAX_IDEMPOTENCY_KEY}")
        if self.delay is not None:
            if isinstance(self.delay, bool) or not isinstance(self.delay, int | float | timedelta):
                raise ValueError("delay must be a number of seconds or a timedelta")
            if _seconds(self.delay) < 0:
                raise ValueError("delay must not be negative")
        if self.priority is not None:
            top = max_priority or 255
            if isinstance(self.priority, bool) or not isinstance(self.priority, int):
                raise ValueError("priority must be an integer")
            if not 0 <= self.priority <= top:
                raise ValueError(f"priority must be between 0 and {top}")
        if self.max_retries is not None and (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise ValueError("max_retries must be a whole number ≥ 0")
        for name in ("min_backoff", "max_backoff"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                raise ValueError(f"{name} must be a number of seconds ≥ 0")
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


def _seconds(delay: float | timedelta) -> float:
    return delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
