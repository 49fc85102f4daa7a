"""Recipient checks done before anything is sent: syntax (no DNS), header injection, count."""

from __future__ import annotations

import re
from email.headerregistry import Address
from email.utils import formataddr, getaddresses

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
        result.append(formataddr((name, normalised)) if name else normalised)
    return result


_NAME_ADDR = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<address>[^<>]+)>\s*$")


def _split_display_name(item: str) -> tuple[str, str]:
    """``Ada <ada@example.com>`` → (``Ada``, ``ada@example.com``); a bare address has no name.

    Stricter than ``email.utils.getaddresses``, which reads ``a@b c`` as some address.
    """
    match = _NAME_ADDR.match(item)
    if match is None:
        return "", item.strip()
    return match.group("name").strip().strip('"').strip(), match.group("address").strip()


def bare_address(address: str) -> str:
    """``Ada <ada@example.com>`` → ``ada@example.com`` (the SMTP envelope wants the bare form)."""
    return getaddresses([address])[0][1]


def domain_of(address: str) -> str:
    """The domain of an address, for Message-IDs; ``localhost`` when it has none."""
    bare = bare_address(address)
    try:
        return Address(addr_spec=bare).domain or "localhost"
    except (ValueError, IndexError):
        return "localhost"
