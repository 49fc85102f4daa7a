"""The shape of a Dramatiq message as a worker accepts it off a queue.

Dramatiq decodes any JSON object whose keys are a message's fields, whatever their values'
types: a list as ``actor_name`` or a string as ``message_timestamp`` then crashes a hook, or the
consumer thread itself (which reconnects, gets the same message back, and crashes again).
``ChannelBoundConsumer`` (``jobs/consumer.py``) dead-letters a message this module finds
malformed before any middleware or actor sees it, with the reason in the worker's log.

Pure functions (they read the clock, nothing else).
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from typing import Any

from jobs.defaults import MAX_DELAY

#: Options Dramatiq's middleware and Conveyor's compute with: numbers (or absent, or null).
NUMERIC_OPTIONS = (
    "eta",
    "retries",
    "max_retries",
    "min_backoff",
    "max_backoff",
    "max_age",
    "time_limit",
    "broker_priority",
    "conveyor_due_at",
    "conveyor_rechecks",
)
_TEXT_FIELDS = ("queue_name", "actor_name", "message_id")
#: Options naming the actor Dramatiq's Callbacks middleware enqueues after the job.
CALLBACK_OPTIONS = ("on_success", "on_failure")


def malformed(message: Any, actors: Collection[str] | None = None) -> str | None:
    """Why a decoded message cannot be handled safely (None when it can). ``actors``: the
    registered actor names a callback option may name (None: not checked)."""
    for name in _TEXT_FIELDS:
        value = getattr(message, name, None)
        if not isinstance(value, str) or not value:
            return f"{name} must be a non-empty string, not {_type(value)}"
    if not isinstance(message.args, tuple | list):
        return f"args must be a list, not {_type(message.args)}"
    if not isinstance(message.kwargs, dict):
        return f"kwargs must be an object, not {_type(message.kwargs)}"
    if not _number(message.message_timestamp):
        return f"message_timestamp must be a number, not {_type(message.message_timestamp)}"
    options = message.options
    if not isinstance(options, dict):
        return f"options must be an object, not {_type(options)}"
    for name in NUMERIC_OPTIONS:
        value = options.get(name)
        if value is not None and not _number(value):
            return f"option {name} must be a number, not {_type(value)}"
    eta = options.get("eta")
    if eta is not None and eta > (time.time() + MAX_DELAY) * 1000:
        # Held in the worker's memory (or the store) until due: a date past what either holds.
        return "option eta is more than ten years ahead"
    # Exception classes to expect: a message can only name them as text, which Dramatiq's
    # worker would pass to isinstance() and crash on.
    if options.get("throws") is not None:
        return "option throws cannot be set by a message"
    return _bad_callbacks(options, actors)


def _bad_callbacks(options: dict[str, Any], actors: Collection[str] | None) -> str | None:
    """Dramatiq's Callbacks and Pipelines middleware look these up after the job has run: a
    wrong type or an unknown actor there failed after the outcome, with a CRITICAL line."""
    for name in CALLBACK_OPTIONS:
        value = options.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            return f"option {name} must be an actor's name, not {_type(value)}"
        if actors is not None and value not in actors:
            return f"option {name} names no registered actor"
    target = options.get("pipe_target")
    if target is not None and not isinstance(target, dict):
        return f"option pipe_target must be an object, not {_type(target)}"
    if not isinstance(options.get("pipe_ignore", False), bool):
        return "option pipe_ignore must be true or false"
    return None


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and (
        isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    )


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__
