"""Sealing and opening values at rest (jobs/crypto.py): AES-256-GCM, key ids, associated data."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest

from jobs import DecryptionError, UnknownKey, crypto
from jobs.admin.keys import KeyStatus
from jobs.crypto import SEGMENT, Sealer, file_key_id, generate_key, key_id_of
from jobs.keyring import Keyring, keyring_of

KEY_A = generate_key("a")
KEY_B = generate_key("b")
JOB = "0b6c4f0e-3f4a-4c57-9b1e-2d7f6a1c9e10"
OTHER = "6a0de3e9-51a5-4b0e-8a38-8f7f0e0f0c11"


def sealer(*entries: str) -> Sealer:
    return Sealer(Keyring.parse(",".join(entries)))


def test_a_generated_key_parses_as_the_setting_would() -> None:
    ring = Keyring.parse(KEY_A)
    assert ring.current.id == "a"
    assert len(ring.current.secret) == 32
    with pytest.raises(ValueError, match="id:base64"):
        generate_key("no spaces allowed")


def test_json_text_and_bytes_round_trip_and_carry_their_key_id() -> None:
    s = sealer(KEY_A)
    payload = {"to": "ada@example.com", "context": {"name": "Ada ✓"}, "n": [1, 2.5, None]}
    envelope = s.seal_json(payload, crypto.PAYLOAD, JOB)
    assert set(envelope) == {"$enc", "kid", "n", "ct"}
    assert envelope["kid"] == "a"
    assert "ada@example.com" not in str(envelope)
    assert s.open_json(envelope, crypto.PAYLOAD, JOB) == payload
    text = s.seal_text("ValueError: bad ada@example.com \udc80", crypto.ERROR, JOB)
    assert text is not None
    assert text.startswith("$enc:v1:a:")
    assert "ada" not in text
    assert s.open_text(text, crypto.ERROR, JOB) == "ValueError: bad ada@example.com \udc80"
    body = s.seal_bytes(b'{"message_id": "x"}', crypto.HELD_BODY, JOB)
    assert body is not None
    assert b"message_id" not in body
    assert s.open_bytes(body, crypto.HELD_BODY, JOB) == b'{"message_id": "x"}'
    assert [key_id_of(v) for v in (envelope, text, body, payload, "plain", b"plain", None)] == [
        "a",
        "a",
        "a",
        None,
        None,
        None,
        None,
    ]


def test_the_same_value_seals_differently_each_time() -> None:
    s = sealer(KEY_A)
    assert s.seal_text("same", crypto.ERROR, JOB) != s.seal_text("same", crypto.ERROR, JOB)


def test_without_keys_nothing_is_sealed() -> None:
    s = Sealer(keyring_of(None))
    assert not s.enabled
    assert s.seal_json({"a": 1}, crypto.PAYLOAD, JOB) == {"a": 1}
    assert s.seal_text("x", crypto.ERROR, JOB) == "x"
    assert s.seal_bytes(b"x", crypto.HELD_BODY, JOB) == b"x"
    assert s.seal_file(io.BytesIO(), JOB) is None


def test_plaintext_from_before_encryption_reads_as_it_is() -> None:
    s = sealer(KEY_A)
    assert s.open_json({"to": "a@b.c"}, crypto.PAYLOAD, JOB) == {"to": "a@b.c"}
    assert s.open_json(["a@b.c"], crypto.ACCEPTED, JOB) == ["a@b.c"]
    assert s.open_text("ValueError: x", crypto.ERROR, JOB) == "ValueError: x"
    assert s.open_bytes(b'{"a": 1}', crypto.HELD_BODY, JOB) == b'{"a": 1}'
    assert s.open_json(None, crypto.RESULT, JOB) is None
    plain = io.BytesIO(b"\x89PNG plain file")
    assert s.open_file(plain, JOB).read() == b"\x89PNG plain file"


@pytest.mark.parametrize("kind", ["json", "text", "bytes"])
def test_a_value_moved_to_another_row_or_field_does_not_open(kind: str) -> None:
    s = sealer(KEY_A)
    seal, open_ = {
        "json": (s.seal_json, s.open_json),
        "text": (s.seal_text, s.open_text),
        "bytes": (s.seal_bytes, s.open_bytes),
    }[kind]
    value: Any = {"x": 1} if kind == "json" else "x" if kind == "text" else b"x"
    sealed = seal(value, crypto.RESULT, JOB)
    with pytest.raises(DecryptionError, match="does not decrypt with key 'a'"):
        open_(sealed, crypto.RESULT, OTHER)
    with pytest.raises(DecryptionError):
        open_(sealed, crypto.ERROR, JOB)
    assert open_(sealed, crypto.RESULT, JOB.upper()) == value  # a row id's case does not matter


def test_a_tampered_value_does_not_open() -> None:
    s = sealer(KEY_A)
    envelope = s.seal_json({"amount": 100}, crypto.PAYLOAD, JOB)
    ct = bytearray(base64.b64decode(envelope["ct"]))
    ct[0] ^= 1
    tampered = {**envelope, "ct": base64.b64encode(bytes(ct)).decode()}
    with pytest.raises(DecryptionError, match="altered"):
        s.open_json(tampered, crypto.PAYLOAD, JOB)
    text = s.seal_text("secret", crypto.ERROR, JOB)
    assert text is not None
    with pytest.raises(DecryptionError):
        s.open_text(text[:-4] + ("AAAA" if text[-4:] != "AAAA" else "BBBB"), crypto.ERROR, JOB)
    with pytest.raises(DecryptionError, match="malformed"):
        s.open_json({**envelope, "n": "not base64!"}, crypto.PAYLOAD, JOB)


def test_an_unknown_key_id_is_named_in_the_error() -> None:
    sealed = sealer(KEY_A).seal_json({"x": 1}, crypto.PAYLOAD, JOB)
    with pytest.raises(UnknownKey, match=r"key id 'a'.*it holds b") as caught:
        sealer(KEY_B).open_json(sealed, crypto.PAYLOAD, JOB)
    assert caught.value.key_id == "a"
    with pytest.raises(UnknownKey, match="no keys are set"):
        Sealer().open_json(sealed, crypto.PAYLOAD, JOB)


def test_an_old_key_still_opens_after_a_new_one_became_current() -> None:
    old = sealer(KEY_A).seal_text("kept", crypto.ERROR, JOB)
    rotated = sealer(KEY_B, KEY_A)
    assert rotated.open_text(old, crypto.ERROR, JOB) == "kept"
    assert key_id_of(rotated.seal_text("new", crypto.ERROR, JOB)) == "b"


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 17])
def test_a_file_round_trips_in_segments_and_reads_at_any_offset(size: int) -> None:
    s = sealer(KEY_A)
    data = bytes(i % 251 for i in range(size))
    sink = io.BytesIO()
    writer = s.seal_file(sink, JOB)
    assert writer is not None
    for start in range(0, size, 10_000):  # written in uneven chunks
        writer.write(data[start : start + 10_000])
    writer.close()
    stored = sink.getvalue()
    assert size < 64 or data[:64] not in stored
    assert file_key_id(io.BytesIO(stored)) == "a"
    opened = s.open_file(io.BytesIO(stored), JOB)
    assert opened.read() == data
    opened.seek(size // 2)
    assert opened.read(100) == data[size // 2 : size // 2 + 100]
    opened.seek(-1, io.SEEK_END)
    assert opened.read() == data[-1:]


def test_a_file_cut_short_swapped_or_moved_does_not_open() -> None:
    s = sealer(KEY_A)
    sink = io.BytesIO()
    writer = s.seal_file(sink, JOB)
    assert writer is not None
    writer.write(b"x" * (2 * SEGMENT + 5))
    writer.close()
    stored = sink.getvalue()
    header = len(stored) - (2 * (SEGMENT + 16) + 5 + 16)
    cut = stored[: header + 2 * (SEGMENT + 16)]  # the last segment dropped
    with pytest.raises(DecryptionError, match="segment 1"):
        s.open_file(io.BytesIO(cut), JOB).read()
    first, second = (stored[header + i * (SEGMENT + 16) : header + (i + 1) * (SEGMENT + 16)] for i in (0, 1))
    swapped = stored[:header] + second + first + stored[header + 2 * (SEGMENT + 16) :]
    with pytest.raises(DecryptionError, match="segment 0"):
        s.open_file(io.BytesIO(swapped), JOB).read()
    with pytest.raises(DecryptionError):
        s.open_file(io.BytesIO(stored), OTHER).read()
    with pytest.raises(UnknownKey):
        sealer(KEY_B).open_file(io.BytesIO(stored), JOB)


def test_the_sealer_and_keys_never_show_their_secret() -> None:
    ring = Keyring.parse(KEY_A)
    secret = KEY_A.partition(":")[2]
    assert secret not in repr(Sealer(ring))
    assert secret not in repr(ring)


def test_key_status_names_unknown_and_retirable_keys() -> None:
    status = KeyStatus(
        current="c",
        configured=("c", "b", "a"),
        columns={"jobs.payload": {"c": 5, "b": 1, "plaintext": 2}, "artifact_files": {"x": 1}},
    )
    assert status.totals() == {"c": 5, "b": 1, "plaintext": 2, "x": 1}
    assert status.unknown() == ["x"]
    assert status.retirable() == ["a"]
    assert status.to_dict()["retirable_keys"] == ["a"]
