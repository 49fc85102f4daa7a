"""The keys of ``CONVEYOR_ENCRYPTION_KEYS``: ``id:base64-32-bytes``, comma-separated, the first
is current (SPEC §10).

Encryption at rest takes :attr:`Keyring.current` to seal and looks a value's key up by its id to
open it; keyed hashes (GDPR subject lookups) use a subkey derived per purpose, so one secret is
never used for two things.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from jobs.errors import SettingsError

_KEY_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
KEY_BYTES = 32


@dataclass(frozen=True)
class Key:
    """One AES-256 key and the id stored beside every value it sealed."""

    id: str
    secret: bytes

    def __repr__(self) -> str:  # the secret never reaches a log or a traceback
        return f"Key(id={self.id!r})"

    def derive(self, purpose: str) -> bytes:
        """A 32-byte subkey for one ``purpose`` (e.g. ``"subject"``): HMAC-SHA256 of the purpose."""
        return hmac.new(self.secret, f"conveyor/{purpose}".encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class Keyring:
    """Every configured key, the current one first."""

    keys: tuple[Key, ...]

    @property
    def current(self) -> Key:
        return self.keys[0]

    def get(self, key_id: str) -> Key | None:
        return next((key for key in self.keys if key.id == key_id), None)

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """Parse ``CONVEYOR_ENCRYPTION_KEYS``.

        Raises:
            SettingsError: an entry is not ``id:base64`` of 32 bytes, or an id repeats.
        """
        keys: list[Key] = []
        for entry in (part.strip() for part in text.split(",")):
            key_id, sep, encoded = entry.partition(":")
            if not sep or not _KEY_ID_RE.match(key_id):
                raise SettingsError(
                    "CONVEYOR_ENCRYPTION_KEYS: each key must be id:base64 (id of 1-16 letters, digits, "
                    "'_' or '-'), comma-separated, the current key first"
                )
            keys.append(Key(key_id, _decode(key_id, encoded)))
        ids = [key.id for key in keys]
        if len(set(ids)) != len(ids):
            raise SettingsError(f"CONVEYOR_ENCRYPTION_KEYS: key ids repeat ({', '.join(ids)})")
        return cls(tuple(keys))


def keyring_of(setting: str | None) -> Keyring | None:
    """The keyring of ``Settings.encryption_keys`` (None when unset: values stored in the clear)."""
    return Keyring.parse(setting) if setting else None


def _decode(key_id: str, encoded: str) -> bytes:
    try:
        secret = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError(f"CONVEYOR_ENCRYPTION_KEYS: key {key_id!r} is not valid base64") from None
    if len(secret) != KEY_BYTES:
        raise SettingsError(
            f"CONVEYOR_ENCRYPTION_KEYS: key {key_id!r} has {len(secret)} bytes, not {KEY_BYTES} "
            "(make one with: python -c 'import os,base64; print(base64.b64encode(os.urandom(32)).decode())')"
        )
    return secret
