"""A rate limit shared by every replica, kept in Redis (GCRA: smooth, one key, server time).

Redis is an aid here, not a dependency: when it cannot be reached the limiter lets
work through and logs a warning (fail open).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from jobs.settings import parse_rate

logger = logging.getLogger("conveyor.ratelimit")

# Returns how many milliseconds to wait before trying again; 0 means "go", and the slot is taken.
_GCRA = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then return allow_at - now end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now + interval)
return 0
"""

#: Seconds between two "Redis is down" warnings.
WARN_EVERY = 60.0


class RateLimiter:
    """At most ``count`` acquisitions per ``period`` seconds, with a burst of ``burst``."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        rate: str,
        *,
        burst: int = 1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        count, period = parse_rate(rate)
        self.key = key
        self.interval_ms = max(1, round(period * 1000 / count))
        self.tolerance_ms = self.interval_ms * (burst - 1)
        self._script = client.register_script(_GCRA)
        self._sleep = sleep
        self._last_warning = 0.0

    def wait_for_slot(self) -> float:
        """Block until a slot is free (never fails for the limit). Returns the seconds waited."""
        waited = 0.0
        while True:
            try:
                wait_ms = int(self._script(keys=[self.key], args=[self.interval_ms, self.tolerance_ms]))
            except redis.RedisError as exc:
                self._warn(exc)
                return waited
            if wait_ms <= 0:
                return waited
            pause = min(wait_ms / 1000, 5.0)
            self._sleep(pause)
            waited += pause

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            logger.warning(
                "rate limit %s not enforced: Redis unreachable (%s); sending anyway", self.key, exc
            )
