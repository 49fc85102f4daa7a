"""Payloads and delivery options are checked before anything is sent."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jobs.kinds import get_kind
from jobs.kinds.noop import validate
from producers import DeliveryOptions


def test_a_valid_noop_payload_is_normalised() -> None:
    assert validate({"sleep": 1, "fail_attempts": 2, "permanent": False}) == {
        "sleep": 1.0,
        "fail_attempts": 2,
        "permanent": False,
    }
    assert validate({}) == {}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"sleep": 61}, "sleep=61 must be between 0 and 60"),
        ({"sleep": -1}, "between 0 and 60"),
        ({"sleep": "1"}, "sleep must be a number, not str"),
        ({"sleep": True}, "sleep must be a number, not bool"),
        ({"fail_attempts": -1}, "fail_attempts must be a whole number"),
        ({"permanent": "yes"}, "permanent must be true or false"),
        ({"slep": 1}, "unknown field"),
    ],
)
def test_a_bad_noop_payload_is_a_value_error_naming_the_field(
    payload: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        validate(payload)


def test_an_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown job kind 'fax'; known kinds: email, image, noop"):
        get_kind("fax")


def test_delivery_options_become_dramatiq_message_options_in_milliseconds() -> None:
    options = DeliveryOptions(
        max_retries=2, min_backoff=0.5, max_backoff=10, priority=3, delay=timedelta(seconds=2)
    )

    options.check(max_priority=5)

    assert options.message_options() == {
        "max_retries": 2,
        "min_backoff": 500,
        "max_backoff": 10_000,
        "broker_priority": 3,
    }
    assert options.delay_ms() == 2000
    assert DeliveryOptions(delay=0).delay_ms() is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (DeliveryOptions(delay=-1), "delay must not be negative"),
        (DeliveryOptions(delay="soon"), "delay must be a number"),  # type: ignore[arg-type]
        (DeliveryOptions(priority=9), "priority must be between 0 and 5"),
        (DeliveryOptions(max_retries=-1), "max_retries must be a whole number"),
        (DeliveryOptions(min_backoff=5, max_backoff=1), "min_backoff must not exceed max_backoff"),
        (DeliveryOptions(idempotency_key=""), "idempotency_key must be a non-empty string"),
        (DeliveryOptions(idempotency_key="k" * 256), "at most 255"),
    ],
)
def test_bad_delivery_options_are_value_errors(options: DeliveryOptions, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        options.check(max_priority=5)
