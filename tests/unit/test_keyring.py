"""CONVEYOR_ENCRYPTION_KEYS: parsing, the current key, derived subkeys, secrets kept out of repr."""

from __future__ import annotations

import base64

import pytest

from jobs.errors import SettingsError
from jobs.keyring import Keyring
from jobs.settings import Settings

ONE = base64.b64encode(b"1" * 32).decode()
TWO = base64.b64encode(b"2" * 32).decode()


def test_the_first_key_is_current_and_every_key_is_found_by_its_id() -> None:
    ring = Keyring.parse(f"new:{ONE}, old:{TWO}")
    assert ring.current.id == "new"
    old = ring.get("old")
    assert old is not None
    assert old.secret == b"2" * 32
    assert ring.get("gone") is None


def test_subkeys_differ_by_purpose_and_by_key() -> None:
    ring = Keyring.parse(f"a:{ONE},b:{TWO}")
    assert ring.current.derive("subject") != ring.current.derive("audit")
    assert ring.keys[0].derive("subject") != ring.keys[1].derive("subject")
    assert len(ring.current.derive("subject")) == 32


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nokey", "id:base64"),
        (f"bad id:{ONE}", "id:base64"),
        ("k:not*base64", "not valid base64"),
        (f"k:{base64.b64encode(b'short').decode()}", "5 bytes, not 32"),
        (f"k:{ONE},k:{TWO}", "repeat"),
    ],
)
def test_malformed_keys_are_refused_with_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"CONVEYOR_ENCRYPTION_KEYS": text})


def test_the_keys_never_appear_in_a_repr() -> None:
    settings = Settings.from_env({"CONVEYOR_ENCRYPTION_KEYS": f"k:{ONE}"})
    assert ONE not in repr(settings)
    assert "encryption_keys='***'" in repr(settings)
    assert ONE not in repr(Keyring.parse(f"k:{ONE}"))
