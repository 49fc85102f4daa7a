"""Logging set-up shared by the worker and the CLI: text or JSON lines, passwords masked everywhere."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

from jobs.context import current_job

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
    if "=" not in text and "://" not in text:  # neither pattern can match: most texts (ids, names)
        return text
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


#: The values of ``CONVEYOR_LOG_FORMAT``.
LOG_FORMATS = ("text", "json")
#: The fields a job's log lines carry, in this order, after ``time``, ``level``, ``logger``, ``message``.
JOB_FIELDS = ("job_id", "kind", "attempt", "trace_id")


class JobContextFilter(logging.Filter):
    """Puts the running job's ``job_id``, ``kind``, ``attempt`` and ``trace_id`` on each record
    logged in its worker thread (:func:`jobs.context.current_job`); values passed as a record's
    ``extra`` win."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = current_job()
        if ctx is None:
            return True
        values = {"job_id": ctx.job_id, "kind": ctx.kind, "attempt": ctx.attempt, "trace_id": ctx.trace_id}
        for name, value in values.items():
            if value is not None and getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    ``pid``, the job's fields when it has them (:data:`JOB_FIELDS`), ``traceback`` and ``stack``.

    Non-ASCII characters are escaped, so a line holds no raw control or line-separator character.
    """

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in JOB_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                document[name] = int(value) if name == "attempt" else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["traceback"] = record.exc_text
        if record.stack_info:
            document["stack"] = record.stack_info
        return json.dumps(document, default=str)


class _ConveyorHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` installs (and replaces when called again)."""


class _LineLogger(io.TextIOBase):
    """``sys.stderr`` in JSON mode: each line written to it directly (a banner, a library's
    ``print``, a traceback Python prints itself) is logged as a record of the ``stderr`` logger,
    so it comes out as a JSON line too, secrets masked. A write made while that record is being
    handled (a handler's own error) goes to the real stream unchanged."""

    def __init__(self, target: TextIO) -> None:
        super().__init__()
        self.target = target
        self._pending = ""
        self._lock = threading.Lock()
        self._inside = threading.local()

    def write(self, text: str) -> int:
        if getattr(self._inside, "active", False):
            return self.target.write(text)
        with self._lock:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if line.strip():
                self._log(line)
        return len(text)

    def _log(self, line: str) -> None:
        self._inside.active = True
        try:
            logging.getLogger("stderr").warning("%s", line)
        finally:
            self._inside.active = False

    def flush(self) -> None:
        self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None, thread: str | None = None
) -> None:
    where = f" in thread {thread}" if thread else ""
    logging.getLogger("conveyor").critical("uncaught exception%s", where, exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    name = args.thread.name if args.thread is not None else None
    _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback, name)


def _real_stderr() -> TextIO:
    stream = sys.stderr
    return stream.target if isinstance(stream, _LineLogger) else stream


def configure_logging(level: int = logging.INFO, log_format: str = "text") -> None:
    """Log to stderr with secrets masked: ``time pid level logger: message`` lines (``text``), or
    one JSON object per line (``json``, see :class:`JsonFormatter`), the running job's fields on
    its lines.

    In ``json`` mode every other line written to stderr goes through logging as well (banners,
    Python's warnings, uncaught exceptions), so that the whole stream parses line by line.
    Only the handler installed by an earlier call is replaced: handlers someone else attached to
    the root logger (an embedding application's, a test session's log scan) keep working.

    Raises:
        ValueError: ``log_format`` is not one of :data:`LOG_FORMATS`.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    # Neither format shows where a line was logged: skip the stack walk behind every record
    # (a measurable share of a busy worker's CPU; the logging HOWTO's "Optimization").
    logging._srcfile = None
    handler = _ConveyorHandler(_real_stderr())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(MaskSecretsFilter())
    handler.addFilter(JobContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _ConveyorHandler)] + [handler]
    root.setLevel(level)
    if log_format == "json":
        _route_stderr_through_logging()
    # pika logs every failed connection at ERROR; Conveyor reports them once, in its own words.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    # The lifecycle middleware logs one line per transition and keeps tracebacks in the
    # store; Dramatiq's own traceback per failed attempt would repeat it.
    logging.getLogger("dramatiq.worker.WorkerThread").setLevel(logging.CRITICAL)
    logging.getLogger("dramatiq.middleware.retries").setLevel(logging.ERROR)


def logs_as_json() -> bool:
    """Whether :func:`configure_logging` set up JSON lines (so a command's own lines on stderr
    should be log records too)."""
    return any(
        isinstance(h, _ConveyorHandler) and isinstance(h.formatter, JsonFormatter)
        for h in logging.getLogger().handlers
    )


def _route_stderr_through_logging() -> None:
    if not isinstance(sys.stderr, _LineLogger):
        sys.stderr = _LineLogger(sys.stderr)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
