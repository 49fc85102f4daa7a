"""GDPR data subjects: the e-mail addresses a job names, normalised, matched and hashed.

One address has many spellings: ``Ada <ADA@Example.COM>``, ``ada@example.com``,
``user@münchen.de`` and ``user@xn--mnchen-3ya.de``. :func:`normalise_subject` maps them all to one
canonical form (lower case, Unicode domain); :func:`spellings` gives the forms the address may
take in stored text; :class:`SubjectMatcher` finds them in any string (never inside a longer
address); :class:`SubjectHasher` turns the canonical form into keyed hashes (HMAC-SHA256), so that
jobs are found by address with payloads encrypted, and the audit log names nobody.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jobs.keyring import Keyring

#: The subkey purpose of subject hashes (``Key.derive``).
SUBJECT_PURPOSE = "subject"
#: Something that looks like an address inside free text (payload strings, errors, file names).
_ADDRESS_IN_TEXT = re.compile(r"[^\s<>\"'(),;:\[\]\\@]+@[^\s<>\"'(),;:\[\]\\@]+")
#: A character that would make a match part of a longer address.
_ADDRESS_CHAR = r"[\w.!#$%&'*+/=?^`{|}~-]"


def normalise_subject(text: str) -> str:
    """The canonical form of an address: bare, lower case, the domain in Unicode.

    Raises:
        ValueError: not an e-mail address.
    """
    # Imported here, as idna below: every process loads this module through the store, and only
    # GDPR lookups and keyed subject hashes need them (email_validator and idna: about 1 MiB).
    from jobs.email.addresses import bare_address

    bare = bare_address(text.strip()) if "<" in text else text.strip()
    local, at, domain = bare.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in bare):
        raise ValueError(f"{text!r} is not an e-mail address")
    return f"{local.casefold()}@{_unicode_domain(domain)}"


def _unicode_domain(domain: str) -> str:
    import idna

    domain = domain.rstrip(".").casefold()
    try:
        return ".".join(
            idna.decode(label) if label.startswith("xn--") else label for label in domain.split(".")
        )
    except idna.IDNAError:
        return domain


def _ascii_domain(domain: str) -> str | None:
    if domain.isascii():
        return domain
    import idna

    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        return None


def spellings(subject: str) -> list[str]:
    """The forms a canonical address may take in stored text: Unicode and IDNA domain, and each
    as JSON escapes it (``\\u00fc``), all lower case (match them case-insensitively)."""
    local, _, domain = subject.rpartition("@")
    forms = {subject}
    ascii_domain = _ascii_domain(domain)
    if ascii_domain:
        forms.add(f"{local}@{ascii_domain}")
    forms |= {json.dumps(form)[1:-1].lower() for form in list(forms)}
    return sorted(forms)


class SubjectMatcher:
    """Finds one subject (any spelling, any case) in text, never as part of a longer address."""

    def __init__(self, subject: str) -> None:
        self.subject = normalise_subject(subject)
        self.spellings = spellings(self.subject)
        alternatives = "|".join(re.escape(form) for form in sorted(self.spellings, key=len, reverse=True))
        self._pattern = re.compile(
            rf"(?<!{_ADDRESS_CHAR})(?:{alternatives})(?!{_ADDRESS_CHAR}*\w)", re.IGNORECASE
        )

    def found_in(self, value: Any) -> bool:
        """Whether ``value`` (a string, or JSON: lists, objects, their keys) names the subject."""
        return any(self._pattern.search(text) for text in _strings(value))

    def redact(self, text: str, replacement: str = "[erased]") -> str:
        """``text`` with every spelling of the subject replaced."""
        return self._pattern.sub(replacement, text)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes | bytearray | memoryview):
        yield bytes(value).decode("utf-8", "replace")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def addresses_in(value: Any) -> set[str]:
    """The canonical form of every address named anywhere in ``value`` (JSON or text).

    Cheap for payloads that name none: only strings holding an ``@`` are searched.
    """
    found: set[str] = set()
    for text in _strings(value):
        if "@" not in text:
            continue
        for candidate in _ADDRESS_IN_TEXT.findall(text):
            try:
                found.add(normalise_subject(candidate.strip(".")))
            except ValueError:
                continue
    return found


@dataclass(frozen=True)
class SubjectHasher:
    """Keyed hashes of canonical addresses: with the current key when writing, with every
    configured key when looking up (a rotated key's rows stay findable)."""

    keys: tuple[bytes, ...]

    @classmethod
    def from_keys(cls, encryption_keys: str | None) -> SubjectHasher | None:
        """The hasher of ``CONVEYOR_ENCRYPTION_KEYS``, or ``None`` when encryption is off."""
        if not encryption_keys:
            return None
        return cls(tuple(key.derive(SUBJECT_PURPOSE) for key in Keyring.parse(encryption_keys).keys))

    def __repr__(self) -> str:  # the subkeys never reach a log
        return f"SubjectHasher({len(self.keys)} key(s))"

    def payload_hashes(self, payload: Any) -> list[bytes] | None:
        """The current key's hash of each address ``payload`` names (``None``: it names none)."""
        subjects = addresses_in(payload)
        if not subjects:
            return None
        return sorted(keyed_hash(self.keys[0], subject) for subject in subjects)

    def lookup_hashes(self, subject: str) -> list[bytes]:
        """The hashes one subject may be stored under, one per configured key."""
        canonical = normalise_subject(subject)
        return [keyed_hash(key, canonical) for key in self.keys]


def keyed_hash(key: bytes, canonical_subject: str) -> bytes:
    """HMAC-SHA256 of a canonical address."""
    return hmac.new(key, canonical_subject.encode(), hashlib.sha256).digest()
