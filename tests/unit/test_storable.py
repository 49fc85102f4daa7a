"""What the job store can hold: payloads, options and text, as pure checks and properties."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.delivery import DeliveryOptions
from jobs.errors import SettingsError
from jobs.settings import Settings
from jobs.storable import MAX_DEPTH, check_size, check_storable, payload_bytes, storable_text
from jobs.wire import malformed

# ---------------------------------------------------------------- examples


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"context": {"name": "Ada\x00"}}, "payload.context.name: contains a NUL character"),
        ({"context": {"a\x00": 1}}, "payload.context: key 'a\\x00': contains a NUL character"),
        ({"items": [1, "x", {"y": "\ud83d"}]}, "payload.items[2].y: contains an unpaired surrogate (U+D83D)"),
        ({"n": float("nan")}, "payload.n: nan is not a JSON number"),
        ({"n": float("-inf")}, "payload.n: -inf is not a JSON number"),
        ({"n": 10**4000}, "payload.n: integer too large"),
        ({"b": b"bytes"}, "payload.b: a bytes is not JSON"),
        ({"s": {1, 2}}, "payload.s: a set is not JSON"),
        ({("t",): 1}, "payload: a key of type tuple is not JSON"),
    ],
)
def test_what_the_store_cannot_hold_is_refused_naming_the_field(
    payload: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        check_storable(payload)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


def test_nesting_is_bounded_before_any_recursion_can_overflow() -> None:
    check_storable(nested(MAX_DEPTH))
    with pytest.raises(ValueError, match=f"nested deeper than {MAX_DEPTH} levels"):
        check_storable(nested(MAX_DEPTH + 1))
    with pytest.raises(ValueError, match="nested deeper"):
        check_storable(nested(100_000))  # far past Python's recursion limit: still a clear error


def test_a_payload_over_the_cap_names_the_setting_and_its_size() -> None:
    payload = {"text": "é" * 600}  # two bytes each in UTF-8
    assert payload_bytes(payload) == len('{"text":""}') + 1200
    assert check_size(payload, 2000) == 1211
    with pytest.raises(
        ValueError, match=r"payload: 1,211 bytes of JSON, more than CONVEYOR_MAX_PAYLOAD_BYTES=1,000"
    ):
        check_size(payload, 1000)


def test_text_the_worker_writes_is_made_storable_not_lost() -> None:
    assert storable_text("a\x00b") == "a\\x00b"
    assert storable_text("x\ud800y") == "x\\ud800y"
    assert storable_text("plain ünïcode") == "plain ünïcode"
    assert storable_text(None) is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (DeliveryOptions(delay=float("inf")), "delay=inf is too large"),
        (DeliveryOptions(delay=float("nan")), "delay must be a number of seconds, not NaN"),
        (DeliveryOptions(delay=timedelta.max), "delay=8.64e\\+13 is too large"),
        (DeliveryOptions(delay=10**400), "delay is too large"),
        (DeliveryOptions(max_retries=2**31), "max_retries must be between 0 and 2147483647"),
        (DeliveryOptions(priority=2**70), "priority must be between 0 and 255"),
        (DeliveryOptions(min_backoff=float("inf")), "min_backoff=inf is too large"),
        (DeliveryOptions(max_backoff=-0.5), "max_backoff must not be negative"),
        (DeliveryOptions(idempotency_key="k\x00"), "idempotency_key: contains a NUL character"),
    ],
)
def test_options_the_store_or_the_clock_cannot_hold_are_refused(
    options: DeliveryOptions, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        options.check(None)


@pytest.mark.parametrize("raw", ["0", "-1", "1e6", "x", str(2**40)])
def test_the_payload_cap_setting_is_a_positive_size(raw: str) -> None:
    with pytest.raises(SettingsError, match="CONVEYOR_MAX_PAYLOAD_BYTES"):
        Settings.from_env({"CONVEYOR_MAX_PAYLOAD_BYTES": raw})


def test_the_payload_cap_defaults_to_one_mebibyte() -> None:
    assert Settings().max_payload_bytes == 1024 * 1024
    assert Settings.from_env({"CONVEYOR_MAX_PAYLOAD_BYTES": "4096"}).max_payload_bytes == 4096


# ---------------------------------------------------------------- properties

#: Text with what PostgreSQL refuses mixed in: NUL and both halves of a surrogate pair.
hostile_text = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=st.sampled_from(["a", "é", "😀", "\x00", "\ud800", "\udfff", "\n", "\\"]), max_size=8),
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=10**3000, max_value=10**5000),
    st.floats(allow_nan=True, allow_infinity=True),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, hostile_text)
json_trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(hostile_text, children, max_size=4)
    ),
    max_leaves=25,
)
deep_trees = st.integers(min_value=0, max_value=3 * MAX_DEPTH).map(nested)


def refusal(check: Callable[[], object]) -> str | None:
    """The ``ValueError`` message ``check()`` raises, None when it passes."""
    try:
        check()
    except ValueError as exc:
        return str(exc)
    return None


def offending(value: Any, depth: int = 0) -> bool:
    """An oracle written apart from ``check_storable``: whether anything in ``value`` is unstorable."""
    if isinstance(value, str):
        return "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) >= 2**13_000
    if isinstance(value, list):
        return depth >= MAX_DEPTH or any(offending(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return depth >= MAX_DEPTH or any(offending(k) or offending(v, depth + 1) for k, v in value.items())
    return False


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_trees, deep_trees))
def test_any_payload_is_refused_naming_a_field_or_serialises_as_the_store_needs(payload: Any) -> None:
    tree = {"context": payload}
    error = refusal(lambda: check_storable(tree))
    assert (error is not None) == offending(tree), error
    if error is not None:
        assert error.startswith("payload.context"), error
        return
    text = json.dumps(tree, allow_nan=False)  # what psycopg sends for jsonb
    assert "\\u0000" not in text
    text.encode("utf-8")
    assert payload_bytes(tree) > 0


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.timedeltas(),
    )
)
def test_any_delay_is_refused_naming_it_or_gives_a_due_time(delay: Any) -> None:
    options = DeliveryOptions(delay=delay)
    error = refusal(lambda: options.check(None))
    if error is not None:
        assert error.startswith("delay"), error
        return
    delay_ms = options.delay_ms()
    if delay_ms is not None:  # the due time the client computes does not overflow
        now = datetime.now(UTC)
        assert now + timedelta(milliseconds=delay_ms) >= now


# ---------------------------------------------------------------- message shape


class _Message:
    def __init__(self, **fields: Any) -> None:
        base: dict[str, Any] = {
            "queue_name": "q",
            "actor_name": "noop",
            "args": (),
            "kwargs": {},
            "options": {},
            "message_id": "id",
            "message_timestamp": 1,
        }
        self.__dict__.update(base | fields)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"actor_name": ["noop"]}, "actor_name must be a non-empty string, not list"),
        ({"message_id": 7}, "message_id must be a non-empty string, not int"),
        ({"kwargs": [1]}, "kwargs must be an object, not list"),
        ({"args": {"a": 1}}, "args must be a list, not dict"),
        ({"options": "x"}, "options must be an object, not str"),
        ({"message_timestamp": "now"}, "message_timestamp must be a number, not str"),
        ({"message_timestamp": True}, "message_timestamp must be a number, not bool"),
        ({"options": {"retries": "1"}}, "option retries must be a number, not str"),
        ({"options": {"eta": [1]}}, "option eta must be a number, not list"),
        ({"options": {"throws": "ValueError"}}, "option throws cannot be set by a message"),
        ({"options": {"eta": 10**20}}, "option eta is more than ten years ahead"),
    ],
)
def test_a_malformed_message_is_named_before_any_middleware_sees_it(
    fields: dict[str, Any], problem: str
) -> None:
    assert malformed(_Message(**fields)) == problem


def test_a_well_formed_message_passes() -> None:
    assert malformed(_Message(options={"max_retries": 3, "eta": 1.5, "retries": None})) is None


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"on_success": ["noop"]}, "option on_success must be an actor's name, not list"),
        ({"on_failure": "no_such_actor"}, "option on_failure names no registered actor"),
        ({"pipe_target": "x"}, "option pipe_target must be an object, not str"),
        ({"pipe_ignore": "yes"}, "option pipe_ignore must be true or false"),
    ],
)
def test_callback_and_pipeline_options_must_name_what_dramatiq_can_look_up(
    options: dict[str, Any], problem: str
) -> None:
    # Dramatiq's Callbacks middleware looks these up after the job ran: a list would crash it
    # (unhashable), an unknown name would raise ActorNotFound, each a CRITICAL line.
    assert malformed(_Message(options=options), actors={"noop": object()}) == problem
    assert malformed(_Message(options={"on_success": "noop"}), actors={"noop": object()}) is None
