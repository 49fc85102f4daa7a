"""Signed messages: the canonical signature, the settings, and what the producer signs.

Changing anything a signed message decides (queue, actor, args, kwargs, id, timestamp, options)
breaks its signature; the bookkeeping Dramatiq and Conveyor change in transit does not.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest

from jobs.errors import SettingsError, SignatureError
from jobs.settings import Settings
from jobs.signing import SIGNATURE_OPTION, MessageSigner, SigningKey, key_id, parse_until
from jobs.store.migrate import ensure_database, upgrade
from producers import Client

KEY = "k" * 32 + "-current"
OLD = "o" * 32 + "-previous"
SIGNER = MessageSigner(SigningKey.of(KEY))
PREVIOUS = "CONVEYOR_SIGNING_KEY_PREVIOUS"
UNTIL = "CONVEYOR_SIGNING_PREVIOUS_UNTIL"


def signed(**changes: Any) -> dramatiq.Message[Any]:
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="unit.email",
        actor_name="send_email",
        args=(),
        kwargs={"to": "ada@example.com", "template": "welcome", "context": {"name": "Ada"}},
        options={"max_retries": 3, "min_backoff": 1000, "max_backoff": 9000, "broker_priority": 2},
        message_id="5f0e5b0a-3f4e-4c39-9a38-0a5d5b0bd1f1",
        message_timestamp=1_765_000_000_000,
    )
    return SIGNER.sign(dataclasses.replace(message, **changes))


def over_the_wire(message: dramatiq.Message[Any]) -> dramatiq.Message[Any]:
    """The message as a worker decodes it."""
    return dramatiq.Message.decode(message.encode())


replace = dataclasses.replace


def with_options(message: dramatiq.Message[Any], **options: Any) -> dramatiq.Message[Any]:
    return dataclasses.replace(message, options={**message.options, **options})


def test_a_signed_message_verifies_after_its_trip_through_json() -> None:
    message = signed()

    assert message.options[SIGNATURE_OPTION].startswith(f"v1:{key_id(KEY)}:")
    assert SIGNER.verify(over_the_wire(message)) == key_id(KEY)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda m: replace(m, queue_name="unit.default"), id="moved to another queue"),
        pytest.param(lambda m: replace(m, queue_name="other.email"), id="another namespace"),
        pytest.param(lambda m: replace(m, actor_name="noop"), id="another actor"),
        pytest.param(lambda m: replace(m, args=("x",)), id="args added"),
        pytest.param(lambda m: replace(m, kwargs={**m.kwargs, "to": "eve@example.com"}), id="kwarg"),
        pytest.param(
            lambda m: replace(m, kwargs={**m.kwargs, "context": {"name": "Eve"}}), id="nested kwarg"
        ),
        pytest.param(lambda m: replace(m, kwargs={**m.kwargs, "bcc": "eve@x.org"}), id="kwarg added"),
        pytest.param(lambda m: replace(m, message_id="0" * 8 + m.message_id[8:]), id="message id"),
        pytest.param(lambda m: replace(m, message_timestamp=m.message_timestamp + 1), id="timestamp"),
        pytest.param(lambda m: with_options(m, max_retries=1000), id="max_retries"),
        pytest.param(lambda m: with_options(m, min_backoff=0), id="min_backoff"),
        pytest.param(lambda m: with_options(m, max_backoff=1), id="max_backoff"),
        pytest.param(lambda m: with_options(m, broker_priority=9), id="priority"),
        pytest.param(lambda m: with_options(m, time_limit=1), id="option added"),
        pytest.param(
            lambda m: replace(m, options={k: v for k, v in m.options.items() if k != "max_retries"}),
            id="option removed",
        ),
    ],
)
def test_changing_anything_that_decides_what_runs_breaks_the_signature(tamper: Any) -> None:
    message = over_the_wire(tamper(signed()))

    with pytest.raises(SignatureError, match="message signature invalid: it does not match") as refused:
        SIGNER.verify(message)

    assert not refused.value.unsigned


@pytest.mark.parametrize(
    "transit",
    [
        pytest.param(lambda m: with_options(m, retries=4, traceback="Traceback ..."), id="a retry"),
        pytest.param(lambda m: with_options(m, requeue_timestamp=1), id="requeued by Retries"),
        pytest.param(lambda m: with_options(m, eta=1_765_000_009_000), id="delayed (eta)"),
        pytest.param(lambda m: replace(m, queue_name="unit.email.DQ"), id="its .DQ"),
        pytest.param(lambda m: replace(m, queue_name="unit.email.XQ"), id="its .XQ"),
        pytest.param(
            lambda m: with_options(m, conveyor_held=True, conveyor_rechecks=2), id="held by Conveyor"
        ),
    ],
)
def test_what_dramatiq_and_conveyor_change_in_transit_keeps_the_signature(transit: Any) -> None:
    assert SIGNER.verify(over_the_wire(transit(signed()))) == key_id(KEY)


def test_a_dead_letter_requeued_as_conveyor_dlq_does_still_verifies() -> None:
    """``conveyor dlq requeue`` re-encodes the body with its own json.dumps and drops retry fields."""
    message = with_options(signed(), retries=3, traceback="...", eta=5)
    raw = json.loads(message.encode())
    options = {k: v for k, v in raw["options"].items() if k not in ("retries", "traceback", "eta")}
    body = json.dumps({**raw, "queue_name": "unit.email", "options": options}).encode()

    assert SIGNER.verify(dramatiq.Message.decode(body)) == key_id(KEY)


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (None, "message is not signed"),
        ("garbage", "malformed"),
        ("v2:abc:AAAA", "malformed"),
        ("v1:abc:not-base64!", "malformed"),
        ("v1:abc:" + "A" * 43, "malformed"),  # a key id is 12 hex digits: nothing else is quoted
        ("v1:0123456789ab:" + "A" * 43, "unknown key 0123456789ab"),
    ],
)
def test_missing_malformed_and_unknown_signatures_are_refused_with_their_reason(
    signature: str | None, reason: str
) -> None:
    message = signed()
    options = {k: v for k, v in message.options.items() if k != SIGNATURE_OPTION}
    if signature is not None:
        options[SIGNATURE_OPTION] = signature

    with pytest.raises(SignatureError, match=reason) as refused:
        SIGNER.verify(dataclasses.replace(message, options=options))

    assert refused.value.unsigned is (signature is None)
    assert "\n" not in str(refused.value)


def test_a_signature_made_with_another_key_is_refused() -> None:
    forger = MessageSigner(SigningKey.of("f" * 40))

    with pytest.raises(SignatureError, match="unknown key"):
        SIGNER.verify(forger.sign(signed()))


def test_a_forged_mac_under_the_right_key_id_is_refused() -> None:
    message = signed()
    version, kid, _mac = message.options[SIGNATURE_OPTION].split(":")
    forged = with_options(message, **{SIGNATURE_OPTION: f"{version}:{kid}:{'A' * 43}"})

    with pytest.raises(SignatureError, match="does not match"):
        SIGNER.verify(forged)


def test_the_previous_key_verifies_until_its_deadline_and_never_signs() -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    old_signer = MessageSigner(SigningKey.of(OLD))
    rotated = MessageSigner(SigningKey.of(KEY), SigningKey.of(OLD, until=now + timedelta(hours=1)))
    from_old_producer = over_the_wire(old_signer.sign(signed()))

    assert rotated.verify(from_old_producer, now) == key_id(OLD)
    with pytest.raises(SignatureError, match=r"previous key \w+, refused since 2026-12-07T01:00:00"):
        rotated.verify(from_old_producer, now + timedelta(hours=1))
    assert rotated.sign(signed()).options[SIGNATURE_OPTION].split(":")[1] == key_id(KEY)


def test_signing_normalises_values_to_what_the_worker_decodes() -> None:
    message = signed(args=(1, (2, 3)), kwargs={"context": {1: "one"}})

    assert message.kwargs == {"context": {"1": "one"}}
    assert SIGNER.verify(over_the_wire(message))


def test_a_key_id_is_a_fingerprint_that_shows_nothing_of_the_key() -> None:
    assert key_id(KEY) != key_id(OLD)
    assert len(key_id(KEY)) == 12
    assert key_id(KEY) not in KEY.encode().hex()
    assert "secret" not in repr(SigningKey.of("secret" * 6))


# ------------------------------------------------------------------ settings


def test_the_signing_settings_are_read_from_the_environment_and_masked() -> None:
    settings = Settings.from_env(
        {
            "CONVEYOR_SIGNING_KEY": KEY,
            "CONVEYOR_SIGNING_KEY_PREVIOUS": OLD,
            "CONVEYOR_SIGNING_PREVIOUS_UNTIL": "2026-12-31T00:00:00Z",
            "CONVEYOR_ACCEPT_UNSIGNED": "1",
        }
    )

    assert settings.signing_key == KEY
    assert settings.accept_unsigned is True
    assert KEY not in repr(settings)
    assert OLD not in str(settings)
    signer = MessageSigner.from_settings(settings)
    assert signer is not None
    assert signer.previous is not None
    assert signer.previous.until == datetime(2026, 12, 31, tzinfo=UTC)
    assert MessageSigner.from_settings(Settings()) is None


@pytest.mark.parametrize(
    ("environ", "error"),
    [
        ({"CONVEYOR_SIGNING_KEY": "short-secret"}, "CONVEYOR_SIGNING_KEY is 12 characters long"),
        ({"CONVEYOR_SIGNING_KEY": KEY, PREVIOUS: "x" * 31}, "PREVIOUS is 31 characters"),
        ({"CONVEYOR_SIGNING_KEY": KEY, PREVIOUS: KEY}, "is the same as"),
        ({PREVIOUS: OLD}, "need CONVEYOR_SIGNING_KEY"),
        ({"CONVEYOR_ACCEPT_UNSIGNED": "1"}, "need CONVEYOR_SIGNING_KEY"),
        ({"CONVEYOR_SIGNING_KEY": KEY, "CONVEYOR_ACCEPT_UNSIGNED": "maybe"}, "must be true or false"),
        ({"CONVEYOR_SIGNING_KEY": KEY, UNTIL: "2027-01-01"}, "needs CONVEYOR_SIGNING_KEY"),
        ({"CONVEYOR_SIGNING_KEY": KEY, PREVIOUS: OLD, UNTIL: "soon"}, "not an ISO 8601 time"),
    ],
)
def test_bad_signing_settings_are_refused_without_printing_a_key(environ: dict[str, str], error: str) -> None:
    with pytest.raises(SettingsError, match=error) as refused:
        Settings.from_env(environ)

    for value in environ.values():
        if len(value) >= 12 and value not in ("2027-01-01",):
            assert value not in str(refused.value)


def test_an_until_without_offset_is_utc() -> None:
    assert parse_until("2026-12-31T12:00") == datetime(2026, 12, 31, 12, tzinfo=UTC)
    assert parse_until(None) is None


# ------------------------------------------------------------------ producers


def test_the_client_signs_every_message_it_sends(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path}/jobs.db"
    settings = Settings(broker_url="memory://", database_url=database_url, namespace="unit", signing_key=KEY)

    ensure_database(settings.database_url)
    with Client(settings) as client:
        upgrade(client._db)
        one = client.enqueue("noop", sleep=0, max_retries=2, priority=1)
        many = client.enqueue_many("noop", [{}, {"sleep": 0}])
        helper = client.send_email("ada@example.com", "welcome", {"name": "Ada"})
        stub: Any = client.broker
        sent = [dramatiq.Message.decode(m.encode()) for q in stub.queues.values() for m in _drain(q)]

    assert {m.message_id for m in sent} == {one.id, helper.id, *(j.id for j in many)}
    for message in sent:
        assert SIGNER.verify(message) == key_id(KEY)


def _drain(queue: Any) -> list[Any]:
    items = []
    while not queue.empty():
        items.append(dramatiq.Message.decode(queue.get_nowait()))
    return items
