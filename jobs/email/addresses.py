"""Recipient checks done before anything is sent: syntax (no DNS), header injection, count."""

from __future__ import annotations

import re
from email.headerregistry import Address
from email.utils import formataddr, getaddresses
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email


def check_header_value(field: str, value: str) -> str:
    """``value`` unchanged, or a ``ValueError`` when it could inject a header (CR, LF, NUL)."""
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"email {field}: line breaks are not allowed in a header ({value!r})")
    return value


def normalise_addresses(field: str, value: object) -> list[str]:
    """One address or a list of them (``ada@example.com`` or ``Ada <ada@example.com>``), checked.

    Returns:
        The addresses as ``Name <addr>`` or ``addr``, with the domain normalised.

    Raises:
        ValueError: not a string or list of strings, a line break, or an invalid address.
    """
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ValueError(f"email {field}: expected an address or a list of addresses")
    result = []
    for item in items:
        check_header_value(field, item)
        name, address = _split_display_name(item)
        try:
            normalised = validate_email(address, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise ValueError(f"email {field}: {address!r} is not a valid address: {exc}") from None
        result.append(_with_name(name, normalised) if name else normalised)
    return result


def _with_name(name: str, address: str) -> str:
    """``Name <address>``, the name quoted when it must be (and RFC 2047-encoded when not
    ASCII, unless the address itself is not ASCII: ``formataddr`` refuses those)."""
    if address.isascii():
        return formataddr((name, address))
    local, _, domain = address.rpartition("@")
    return str(Address(display_name=name, username=local, domain=domain))


_NAME_ADDR = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<address>[^<>]+)>\s*$")


def _split_display_name(item: str) -> tuple[str, str]:
    """``Ada <ada@example.com>`` → (``Ada``, ``ada@example.com``); a bare address has no name.

    Stricter than ``email.utils.getaddresses``, which reads ``a@b c`` as some address.
    """
    match = _NAME_ADDR.match(item)
    if match is None:
        return "", item.strip()
    return match.group("name").strip().strip('"').strip(), match.group("address").strip()


#: A bare address or ``Name <address>`` with no quoting or comment: read without a parser.
_SIMPLE = re.compile(r'^(?:[^<>"(),\\]*<)?([^<>"(),\s\\]+@[^<>"(),\s\\]+)>?$')


def bare_address(address: str) -> str:
    """``Ada <ada@example.com>`` → ``ada@example.com`` (the SMTP envelope wants the bare form)."""
    simple = _SIMPLE.match(address.strip())
    if simple is not None and (simple.group(0).endswith(">") == ("<" in simple.group(0))):
        return simple.group(1)
    return getaddresses([address])[0][1]


@lru_cache(maxsize=64)  # the sender's, for every message
def domain_of(address: str) -> str:
    """The domain of an address (IDNA-encoded), for Message-IDs; ``localhost`` when it has none."""
    bare = bare_address(address)
    try:
        domain = Address(addr_spec=bare).domain or "localhost"
    except (ValueError, IndexError):
        return "localhost"
    return domain if domain.isascii() else wire_address(bare)[0].rpartition("@")[2]


def wire_address(bare: str) -> tuple[str, bool]:
    """A bare address as SMTP and the headers carry it: the domain IDNA-encoded (``xn--…``).

    Returns:
        The address, and whether its local part is not ASCII (only SMTPUTF8 can carry it).

    Raises:
        ValueError: the address is not valid (its domain cannot be IDNA-encoded).
    """
    if bare.isascii():
        return bare, False
    try:
        valid = validate_email(bare, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{bare!r} cannot be sent: {exc}") from None
    return f"{valid.local_part}@{valid.ascii_domain}", not valid.local_part.isascii()
