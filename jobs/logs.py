"""Logging set-up shared by the worker and the CLI: one format, passwords masked everywhere."""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"

# user:password@ inside any URL a library might log (pika logs its connection parameters). The
# password runs to the next "@": an unencoded "/" in it ("amqp://u:pa/ss@host") is masked too,
# but a port followed by a query holding an "@" ("http://host:8080/x?to=a@b") is not a password.
PORT_THEN_QUERY = r"\d{1,5}(?:/[^@\s?#]*)?[?#]"
_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):(?!" + PORT_THEN_QUERY + r")(?P<password>[^@\s]+)@"
)

#: Names of URL query parameters and ``key=value`` settings (libpq conninfo) that hold credentials.
CREDENTIAL_PARAMETERS = (
    "password",
    "passwd",
    "pwd",
    "pass",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "auth_token",
    "api_key",
    "apikey",
    "access_key",
    "secret_key",
    "private_key",
    "sslpassword",
    "sslkey_password",
    "signature",
    "sig",
)
_PARAMETER = re.compile(
    r"(?P<name>(?<![A-Za-z0-9_])(?:" + "|".join(CREDENTIAL_PARAMETERS) + r")=)(?P<value>[^&#;\s]+)",
    re.IGNORECASE,
)

# Keys of JSON objects (payloads, results, contexts) whose values are secrets as a whole.
_SECRET_KEY = re.compile(
    r"pass(word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|authorization|"
    r"credential|cookie",
    re.IGNORECASE,
)


# C0 and C1 controls, DEL, soft hyphen, bidi embeddings/overrides/isolates and marks, zero-width
# characters, line and paragraph separators, the BOM, interlinear annotations, lone surrogates.
_HIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufeff\ufff9-\ufffb\ud800-\udfff]"
)
_HIDDEN_BUT_NEWLINE = re.compile(_HIDDEN.pattern.replace("\x00-\x1f", "\x00-\x09\x0b-\x1f"))


def _shown(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: Any, *, newlines: bool = False) -> str:
    """``text`` (``str()`` of it) with every control or invisible formatting character written
    out as an escape (ESC → ``\\x1b``, RIGHT-TO-LEFT OVERRIDE → ``\\u202e``).

    ``newlines``: keep line feeds (a traceback's lines); otherwise they show as ``\\x0a``.
    """
    pattern = _HIDDEN_BUT_NEWLINE if newlines else _HIDDEN
    return pattern.sub(_shown, text if isinstance(text, str) else str(text))


def mask_secrets(text: str) -> str:
    """Replace the password of every URL in ``text``, and the value of every credential-like
    parameter (``?password=…``, ``&token=…``, ``sslpassword=…``), by ``***``."""
    masked = _URL_PASSWORD.sub(r"\g<scheme>:***@", text)
    return _PARAMETER.sub(r"\g<name>***", masked)


def is_secret_key(key: str) -> bool:
    """True when a JSON key names a secret (``password``, ``api_key``, ``token``…)."""
    return bool(_SECRET_KEY.search(key))


def mask_document(value: Any) -> Any:
    """A JSON-like value with secrets masked, for display: the values of secret-looking keys
    become ``***``, and every string goes through :func:`mask_secrets` (URL passwords, credential
    parameters). Used for payloads, results and every ``--json`` document."""
    if isinstance(value, dict):
        return {k: MASK if is_secret_key(str(k)) else mask_document(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_document(v) for v in value]
    if isinstance(value, str):
        return mask_secrets(value)
    return value


class MaskSecretsFilter(logging.Filter):
    """Masks URL passwords and credential parameters in a record's final message and in the
    text of its exception (a driver's error may quote a URL or a connection string); writes the
    message's control characters out (:func:`visible`): one record is one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        # A job's text in a message (an error) neither forges log lines nor drives the terminal.
        masked = visible(mask_secrets(message))
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info)
        return True


class _ConveyorHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` installs (and replaces when called again)."""


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr as ``time pid level logger: message`` with secrets masked.

    Only the handler installed by an earlier call is replaced: handlers someone else attached to
    the root logger (an embedding application's, a test session's log scan) keep working.
    """
    handler = _ConveyorHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(MaskSecretsFilter())
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _ConveyorHandler)] + [handler]
    root.setLevel(level)
    # pika logs every failed connection at ERROR; Conveyor reports them once, in its own words.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    # The lifecycle middleware logs one line per transition and keeps tracebacks in the
    # store; Dramatiq's own traceback per failed attempt would repeat it.
    logging.getLogger("dramatiq.worker.WorkerThread").setLevel(logging.CRITICAL)
    logging.getLogger("dramatiq.middleware.retries").setLevel(logging.ERROR)
