"""Encryption at rest (SPEC §10): AES-256-GCM with the keys of ``CONVEYOR_ENCRYPTION_KEYS``.

Every sealed value carries the id of the key that sealed it, and is bound to its row and field
by the associated data (``conveyor/<field>/<row id>``): a ciphertext copied to another row or
column does not open. Three forms, one per kind of column:

- JSON columns hold an envelope object ``{"$enc": "v1", "kid": "k1", "n": nonce, "ct": …}``
  (base64), so they stay JSONB;
- text columns hold ``$enc:v1:<kid>:<base64 of nonce + ciphertext>``;
- byte columns hold ``\\x00CVE1``, the key id's length and id, the nonce, the ciphertext.

Files (artifacts) are sealed in segments of :data:`SEGMENT` bytes, each its own AES-GCM
message whose nonce carries the segment's number and a last-segment flag (the STREAM
construction), so they are written and read in chunks, read at any offset, and a file cut
short or with segments swapped does not open. A value in none of these forms is plaintext
from before encryption was turned on: it reads as it is (mixed mode).

Only the store (``jobs/store/``) seals and opens values; everyone else sees plaintext.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
from typing import IO, TYPE_CHECKING, Any, overload

from jobs.errors import DecryptionError, UnknownKey
from jobs.keyring import KEY_BYTES, Key, Keyring

if TYPE_CHECKING:
    # ``cryptography`` (about 8 MiB resident, most of it its Rust library) is imported on first
    # use of a key: a worker without CONVEYOR_ENCRYPTION_KEYS never loads it.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENVELOPE = "$enc"
VERSION = "v1"
TEXT_PREFIX = f"{ENVELOPE}:{VERSION}:"
BYTES_MAGIC = b"\x00CVE1"
FILE_MAGIC = b"\x00CVF1"
NONCE_BYTES = 12
TAG_BYTES = 16
#: Bytes of plaintext per sealed segment of a file.
SEGMENT = 64 * 1024
_FILE_PREFIX_BYTES = 7  # the nonce of segment n: 7 random bytes, n (4 bytes), last-segment flag

# The fields a sealed value is bound to (with its row's id), named in errors too.
PAYLOAD = "payload"
RESULT = "result"
ERROR = "error"  # a job's last error and its attempts' errors: the same text
TRACEBACK = "traceback"
ACCEPTED = "accepted"
REJECTED = "rejected"
HELD_BODY = "held_body"
OUTBOX_MESSAGE = "outbox_message"
ARTIFACT = "artifact"


def generate_key(key_id: str) -> str:
    """A new ``id:base64`` entry for ``CONVEYOR_ENCRYPTION_KEYS`` (32 random bytes)."""
    entry = f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"
    Keyring.parse(entry)  # the id is checked as the setting would check it
    return entry


def _aad(field: str, row: str) -> bytes:
    return f"conveyor/{field}/{row.lower()}".encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise DecryptionError(f"{what}: the sealed value is malformed (bad base64)") from None


class Sealer:
    """Seals values with the current key and opens them with the key they name.

    Without a keyring it seals nothing (values are stored in the clear) and opens only
    plaintext: a sealed value then raises :class:`UnknownKey`.
    """

    def __init__(self, keyring: Keyring | None = None) -> None:
        self.keyring = keyring
        self._aeads: dict[str, AESGCM] = {}

    @property
    def enabled(self) -> bool:
        return self.keyring is not None

    @property
    def current_id(self) -> str | None:
        return None if self.keyring is None else self.keyring.current.id

    def __repr__(self) -> str:
        return f"Sealer(current={self.current_id!r})"

    # ------------------------------------------------------------ JSON columns

    def seal_json(self, value: Any, field: str, row: str) -> Any:
        """``value`` as an envelope object (``None`` stays ``None``; without keys, ``value``)."""
        if value is None or self.keyring is None:
            return value
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        key = self.keyring.current
        nonce, sealed = self._seal(key, data, _aad(field, row))
        return {ENVELOPE: VERSION, "kid": key.id, "n": _b64(nonce), "ct": _b64(sealed)}

    def open_json(self, value: Any, field: str, row: str) -> Any:
        """The plaintext of an envelope object; any other value as it is (stored in the clear).

        Raises:
            UnknownKey: the envelope names a key the keyring does not hold.
            DecryptionError: it does not open (tampered, or moved from another row or field).
        """
        if not is_envelope(value):
            return value
        what = f"{field} of {row}"
        if value.get(ENVELOPE) != VERSION:
            raise DecryptionError(f"{what}: unknown envelope version {value.get(ENVELOPE)!r}")
        key = self._key(str(value.get("kid")), what)
        data = self._open(key, _unb64(value.get("n"), what), _unb64(value.get("ct"), what), field, row)
        return json.loads(data)

    # ------------------------------------------------------------ text columns

    @overload
    def seal_text(self, value: str, field: str, row: str) -> str: ...
    @overload
    def seal_text(self, value: None, field: str, row: str) -> None: ...
    def seal_text(self, value: str | None, field: str, row: str) -> str | None:
        if value is None or self.keyring is None:
            return value
        key = self.keyring.current
        nonce, sealed = self._seal(key, value.encode("utf-8", "surrogatepass"), _aad(field, row))
        return f"{TEXT_PREFIX}{key.id}:{_b64(nonce + sealed)}"

    @overload
    def open_text(self, value: str, field: str, row: str) -> str: ...
    @overload
    def open_text(self, value: None, field: str, row: str) -> None: ...
    def open_text(self, value: str | None, field: str, row: str) -> str | None:
        """The plaintext of a sealed text; any other text as it is. Raises as :meth:`open_json`."""
        if value is None or not value.startswith(TEXT_PREFIX):
            return value
        what = f"{field} of {row}"
        key_id, _, encoded = value[len(TEXT_PREFIX) :].partition(":")
        raw = _unb64(encoded, what)
        data = self._open(self._key(key_id, what), raw[:NONCE_BYTES], raw[NONCE_BYTES:], field, row)
        return data.decode("utf-8", "surrogatepass")

    # ------------------------------------------------------------ byte columns

    @overload
    def seal_bytes(self, value: bytes, field: str, row: str) -> bytes: ...
    @overload
    def seal_bytes(self, value: None, field: str, row: str) -> None: ...
    def seal_bytes(self, value: bytes | None, field: str, row: str) -> bytes | None:
        if value is None or self.keyring is None:
            return value
        key = self.keyring.current
        nonce, sealed = self._seal(key, bytes(value), _aad(field, row))
        return BYTES_MAGIC + _key_header(key) + nonce + sealed

    @overload
    def open_bytes(self, value: bytes, field: str, row: str) -> bytes: ...
    @overload
    def open_bytes(self, value: None, field: str, row: str) -> None: ...
    def open_bytes(self, value: bytes | None, field: str, row: str) -> bytes | None:
        """The plaintext of sealed bytes; any other bytes as they are. Raises as :meth:`open_json`."""
        if value is None or bytes(value[: len(BYTES_MAGIC)]) != BYTES_MAGIC:
            return value
        value = bytes(value)
        what = f"{field} of {row}"
        key_id, rest = _read_key_header(value[len(BYTES_MAGIC) :], what)
        return self._open(self._key(key_id, what), rest[:NONCE_BYTES], rest[NONCE_BYTES:], field, row)

    # ------------------------------------------------------------ files

    def seal_file(self, handle: IO[bytes], row: str) -> SealedWriter | None:
        """A writer that seals into ``handle`` (None without keys: write the plaintext)."""
        if self.keyring is None:
            return None
        key = self.keyring.current
        return SealedWriter(handle, self._aead(key), key, _aad(ARTIFACT, row))

    def open_file(self, handle: IO[bytes], row: str) -> IO[bytes]:
        """A readable, seekable file of the plaintext of ``handle`` (``handle`` itself when it
        was stored in the clear). Raises as :meth:`open_json` (when a segment is read)."""
        head = handle.read(len(FILE_MAGIC) + 1 + 16)
        if not head.startswith(FILE_MAGIC):
            handle.seek(0)
            return handle
        what = f"{ARTIFACT} {row}"
        key_id, _ = _read_key_header(head[len(FILE_MAGIC) :], what)
        start = len(FILE_MAGIC) + 1 + len(key_id.encode())
        handle.seek(start)
        prefix = handle.read(_FILE_PREFIX_BYTES)
        aead = self._aead(self._key(key_id, what))
        raw = _OpenedFile(handle, aead, prefix, start + _FILE_PREFIX_BYTES, _aad(ARTIFACT, row), what)
        return io.BufferedReader(raw, buffer_size=SEGMENT)

    # ------------------------------------------------------------ internals

    def _key(self, key_id: str, what: str) -> Key:
        key = None if self.keyring is None else self.keyring.get(key_id)
        if key is None:
            held = "no keys are set" if self.keyring is None else f"it holds {self._ids()}"
            raise UnknownKey(
                key_id,
                f"{what} is encrypted with key id {key_id!r}, which CONVEYOR_ENCRYPTION_KEYS "
                f"does not hold ({held})",
            )
        return key

    def _ids(self) -> str:
        assert self.keyring is not None
        return ", ".join(key.id for key in self.keyring.keys)

    def _aead(self, key: Key) -> AESGCM:
        aead = self._aeads.get(key.id)
        if aead is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            aead = self._aeads[key.id] = AESGCM(key.secret)
        return aead

    def _seal(self, key: Key, data: bytes, aad: bytes) -> tuple[bytes, bytes]:
        nonce = os.urandom(NONCE_BYTES)
        return nonce, self._aead(key).encrypt(nonce, data, aad)

    def _open(self, key: Key, nonce: bytes, sealed: bytes, field: str, row: str) -> bytes:
        aead = self._aead(key)
        from cryptography.exceptions import InvalidTag  # loaded by now: ``aead`` is one of its objects

        try:
            return aead.decrypt(nonce, sealed, _aad(field, row))
        except (InvalidTag, ValueError):
            raise DecryptionError(
                f"{field} of {row} does not decrypt with key {key.id!r}: it was altered, or "
                "belongs to another row or field"
            ) from None


def is_envelope(value: Any) -> bool:
    return isinstance(value, dict) and ENVELOPE in value


def key_id_of(value: Any) -> str | None:
    """The id of the key that sealed a stored value (JSON, text or bytes); None when in the clear."""
    if is_envelope(value):
        return str(value.get("kid"))
    if isinstance(value, str) and value.startswith(TEXT_PREFIX):
        return value[len(TEXT_PREFIX) :].partition(":")[0]
    if isinstance(value, bytes | memoryview) and bytes(value[: len(BYTES_MAGIC)]) == BYTES_MAGIC:
        return _read_key_header(bytes(value[len(BYTES_MAGIC) :]), "value")[0]
    return None


def file_key_id(handle: IO[bytes]) -> str | None:
    """The id of the key that sealed a file (read from its header); None when in the clear."""
    head = handle.read(len(FILE_MAGIC) + 1 + 16)
    if not head.startswith(FILE_MAGIC):
        return None
    return _read_key_header(head[len(FILE_MAGIC) :], "file")[0]


def _key_header(key: Key) -> bytes:
    encoded = key.id.encode()
    return bytes([len(encoded)]) + encoded


def _read_key_header(data: bytes, what: str) -> tuple[str, bytes]:
    if not data:
        raise DecryptionError(f"{what}: the sealed value is cut short")
    size = data[0]
    key_id = data[1 : 1 + size]
    if len(key_id) != size:
        raise DecryptionError(f"{what}: the sealed value is cut short")
    return key_id.decode("ascii", "replace"), data[1 + size :]


def _nonce(prefix: bytes, number: int, last: bool) -> bytes:
    return prefix + number.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


class SealedWriter:
    """Seals what is written to it, a segment at a time, into a file; :meth:`close` writes the last."""

    def __init__(self, handle: IO[bytes], aead: AESGCM, key: Key, aad: bytes) -> None:
        self._handle = handle
        self._aead = aead
        self._aad = aad
        self._prefix = os.urandom(_FILE_PREFIX_BYTES)
        self._pending = bytearray()
        self._number = 0
        handle.write(FILE_MAGIC + _key_header(key) + self._prefix)

    def write(self, data: bytes) -> int:
        self._pending += data
        # A full segment goes out only once more follows: the last one is flagged as last.
        while len(self._pending) > SEGMENT:
            self._emit(bytes(self._pending[:SEGMENT]), last=False)
            del self._pending[:SEGMENT]
        return len(data)

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        """Write the last segment (the rest, possibly empty)."""
        self._emit(bytes(self._pending), last=True)
        self._pending.clear()
        self._handle.flush()

    def _emit(self, chunk: bytes, *, last: bool) -> None:
        nonce = _nonce(self._prefix, self._number, last)
        self._handle.write(self._aead.encrypt(nonce, chunk, self._aad))
        self._number += 1


class _OpenedFile(io.RawIOBase):
    """The plaintext of a sealed file, read a segment at a time, at any offset."""

    def __init__(
        self, handle: IO[bytes], aead: AESGCM, prefix: bytes, start: int, aad: bytes, what: str
    ) -> None:
        super().__init__()
        self._handle = handle
        self._aead = aead
        self._prefix = prefix
        self._start = start
        self._aad = aad
        self._what = what
        body = handle.seek(0, io.SEEK_END) - start
        self._segments = max(1, -(-body // (SEGMENT + TAG_BYTES)))
        self.size = body - TAG_BYTES * self._segments
        if self.size < 0 or len(prefix) != _FILE_PREFIX_BYTES:
            raise DecryptionError(f"{what}: the sealed file is cut short")
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self.size:
            return 0
        number = self._pos // SEGMENT
        segment = self._segment(number)
        offset = self._pos - number * SEGMENT
        view = memoryview(buffer).cast("B")
        count = min(len(view), len(segment) - offset)
        view[:count] = segment[offset : offset + count]
        self._pos += count
        return count

    def close(self) -> None:
        if not self.closed:
            self._handle.close()
        super().close()

    def _segment(self, number: int) -> bytes:
        if self._cached is not None and self._cached[0] == number:
            return self._cached[1]
        self._handle.seek(self._start + number * (SEGMENT + TAG_BYTES))
        sealed = self._handle.read(SEGMENT + TAG_BYTES)
        last = number == self._segments - 1
        from cryptography.exceptions import InvalidTag  # loaded by now: ``self._aead`` is one of its objects

        try:
            plain = self._aead.decrypt(_nonce(self._prefix, number, last), sealed, self._aad)
        except InvalidTag:
            raise DecryptionError(
                f"{self._what}: segment {number} does not decrypt: the file was altered, cut "
                "short, or belongs to another artifact"
            ) from None
        self._cached = (number, plain)
        return plain
