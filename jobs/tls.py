"""TLS helpers shared by the connections to RabbitMQ, PostgreSQL, Redis and SMTP.

Drivers report a failed certificate check in their own words, often buried in a wrapped
exception (pika: ``AMQPConnectionError(AMQPConnectionWorkflowFailed(... SSLCertVerificationError
...))``). :func:`certificate_failure` finds it, so that every service's error reads the same:
``certificate verify failed: <why>``.
"""

from __future__ import annotations

import re
import ssl

#: Python's and OpenSSL's wording (``[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: …
#: (_ssl.c:1006)``) and libpq's (``SSL error: certificate verify failed``).
_VERIFY_FAILED = re.compile(
    r"certificate verify failed(?::\s*(?P<why>[^\n]*?))?\s*(?:\(_ssl\.c:\d+\)|$|'\))", re.M
)

#: Exceptions looked at below the one given: chains are short, wrappers few.
_MAX_DEPTH = 6


def certificate_failure(exc: BaseException) -> str | None:
    """``"certificate verify failed: <why>"`` when ``exc`` comes from a failed certificate check
    (the server's certificate is not signed by a trusted CA, is expired, or names another host);
    None for any other error."""
    found = _find(exc, 0, set())
    if found is None:
        return None
    return f"certificate verify failed: {found}" if found else "certificate verify failed"


def _find(exc: BaseException, depth: int, seen: set[int]) -> str | None:
    if depth > _MAX_DEPTH or id(exc) in seen:
        return None
    seen.add(id(exc))
    # The ssl module sets verify_message on the errors it raises (not on hand-made ones).
    verify_message = getattr(exc, "verify_message", None)
    if isinstance(exc, ssl.SSLCertVerificationError) and verify_message:
        return str(verify_message).strip().rstrip(".")
    match = _VERIFY_FAILED.search(str(exc))
    if match:
        return (match.group("why") or "").strip().rstrip(".")
    inner: list[BaseException] = [a for a in exc.args if isinstance(a, BaseException)]
    inner += [e for e in getattr(exc, "exceptions", None) or () if isinstance(e, BaseException)]
    inner += [e for e in (exc.__cause__, exc.__context__) if e is not None]
    for candidate in inner:
        found = _find(candidate, depth + 1, seen)
        if found is not None:
            return found
    return None


def explained(exc: BaseException) -> str:
    """One line saying why a connection failed: the certificate problem when there is one,
    else the driver's first line (its type's name when it says nothing)."""
    failure = certificate_failure(exc)
    if failure is not None:
        return failure
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
