"""Logging set-up shared by the worker and the CLI: one format, passwords masked everywhere."""

from __future__ import annotations

import logging
import re

# user:password@ inside any URL a library might log (pika logs its connection parameters).
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):(?P<password>[^@/\s]+)@")


def mask_secrets(text: str) -> str:
    """Replace the password of every URL in ``text`` by ``***``."""
    return _URL_PASSWORD.sub(r"\g<scheme>:***@", text)


class MaskSecretsFilter(logging.Filter):
    """Masks URL passwords in a record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr as ``time pid level logger: message`` with secrets masked."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(MaskSecretsFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pika logs every failed connection at ERROR; Conveyor reports them once, in its own words.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    # The lifecycle middleware logs one line per transition and keeps tracebacks in the
    # store; Dramatiq's own traceback per failed attempt would repeat it.
    logging.getLogger("dramatiq.worker.WorkerThread").setLevel(logging.CRITICAL)
    logging.getLogger("dramatiq.middleware.retries").setLevel(logging.ERROR)
