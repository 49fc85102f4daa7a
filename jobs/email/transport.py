"""Delivery: SMTP with one reused connection per worker thread, or a folder of ``.eml`` files."""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from jobs.defaults import DEFAULT_SMTP_IDLE_TIMEOUT, DEFAULT_SMTP_TIMEOUT
from jobs.email.message import OutgoingMessage
from jobs.errors import PermanentError
from jobs.settings import SMTP_STARTTLS_VALUES

logger = logging.getLogger("conveyor.email")


@dataclass(frozen=True)
class SendResult:
    accepted: list[str]
    rejected: dict[str, str]


@dataclass(frozen=True)
class SmtpConfig:
    """What ``smtp://user:pass@host:port?starttls=true&timeout=10&cafile=…&verify=false&reuse=true`` says.

    TLS policy: ``smtps://`` is TLS from the first byte; on ``smtp://`` the connection
    upgrades with STARTTLS whenever the server offers it (``starttls=true``: refuse a server that
    does not; ``starttls=false``: never upgrade). Certificates are verified (``cafile=``, or the
    system's CAs; ``verify=false`` turns that off). A password is only sent over TLS, unless
    ``allow_plaintext_auth=true`` says that this link needs none (a relay on the same host).
    """

    host: str
    port: int
    implicit_tls: bool
    #: STARTTLS is required: a server that does not offer it is refused.
    starttls: bool
    username: str | None
    password: str | None
    timeout: float
    cafile: str | None
    verify: bool
    #: Keep one connection per worker thread across messages (``reuse=false``: one per message).
    reuse: bool = True
    #: Upgrade with STARTTLS when the server offers it (``starttls=false`` turns this off).
    starttls_if_offered: bool = True
    #: Log in over a connection that is not encrypted (``allow_plaintext_auth=true``).
    allow_plaintext_auth: bool = False

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"starttls", "timeout", "cafile", "verify", "reuse", "allow_plaintext_auth"}
        if unknown:
            raise ValueError(f"CONVEYOR_SMTP_URL: unknown parameter(s) {', '.join(sorted(unknown))}")
        implicit_tls = parts.scheme == "smtps"
        starttls = starttls_policy(query.get("starttls", "auto"))
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (465 if implicit_tls else 25),
            implicit_tls=implicit_tls,
            starttls=starttls == "always",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            timeout=float(query.get("timeout", DEFAULT_SMTP_TIMEOUT)),
            cafile=query.get("cafile"),
            verify=_flag(query.get("verify", "true")),
            reuse=_flag(query.get("reuse", "true")),
            starttls_if_offered=starttls != "never",
            allow_plaintext_auth=_flag(query.get("allow_plaintext_auth", "false")),
        )

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.cafile)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def starttls_policy(value: str) -> str:
    """``auto``, ``always`` or ``never`` for a ``starttls=`` value.

    Raises:
        ValueError: none of auto, true/1/yes/on, false/0/no/off.
    """
    policy = SMTP_STARTTLS_VALUES.get(value.lower())
    if policy is None:
        raise ValueError(f"CONVEYOR_SMTP_URL: starttls={value!r} must be auto, true or false")
    return policy


def _flag(value: str) -> bool:
    return value.lower() in ("1", "true", "yes", "on")


class _PooledConnection:
    def __init__(self, smtp: smtplib.SMTP) -> None:
        self.smtp = smtp
        self.last_used = time.monotonic()
        self.lock = threading.Lock()


class SmtpTransport:
    """Sends over SMTP, keeping one connection per thread; a janitor closes idle ones."""

    def __init__(self, config: SmtpConfig, idle_timeout: float = DEFAULT_SMTP_IDLE_TIMEOUT) -> None:
        self.config = config
        self.idle_timeout = idle_timeout
        self.connections_opened = 0
        self._local = threading.local()
        self._all: set[_PooledConnection] = set()
        self._all_lock = threading.Lock()
        self._closed = threading.Event()
        self._janitor = threading.Thread(
            target=self._close_idle_connections, daemon=True, name="smtp-janitor"
        )
        self._janitor.start()

    def send(
        self, message: OutgoingMessage, sender: str, recipients: list[str], before_data: Callable[[], None]
    ) -> SendResult:
        """MAIL, RCPT for each recipient, then ``before_data()``, then DATA.

        After any error the connection is reset (RSET) or, when that fails or the network
        failed, dropped: the next message never finds it in the middle of a transaction.

        Raises:
            smtplib.SMTPException, OSError: as the server or the network said; a reused
                connection the server had closed is replaced once, before anything was sent.
            PermanentError: the message needs SMTPUTF8 and the server does not offer it.
        """
        for reused in (True, False):
            pooled = self._connection(fresh=not reused)
            with pooled.lock:
                try:
                    return self._transaction(pooled.smtp, message, sender, recipients, before_data)
                except smtplib.SMTPServerDisconnected as exc:
                    self._discard(pooled)
                    if not reused or getattr(exc, "conveyor_after_data", False):
                        raise
                    logger.info("SMTP connection was closed by the server; reconnecting")
                except Exception as exc:
                    if _network_error(exc) or not _reset(pooled.smtp):
                        self._discard(pooled)
                    raise
                except BaseException:
                    self._discard(pooled)
                    raise
                finally:
                    pooled.last_used = time.monotonic()
                    if not self.config.reuse:
                        self._discard(pooled)
        raise AssertionError("unreachable")

    def _transaction(
        self,
        smtp: smtplib.SMTP,
        message: OutgoingMessage,
        sender: str,
        recipients: list[str],
        before_data: Callable[[], None],
    ) -> SendResult:
        code, reply = smtp.mail(sender, _mail_options(smtp, message, self.config))
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        rejected: dict[str, tuple[int, bytes]] = {}
        for recipient in recipients:
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                rejected[recipient] = (code, reply)
        if len(rejected) == len(recipients):
            raise smtplib.SMTPRecipientsRefused(rejected)
        before_data()
        try:
            code, reply = smtp.data(message.as_bytes())
        except smtplib.SMTPServerDisconnected as exc:
            exc.conveyor_after_data = True  # type: ignore[attr-defined]
            raise
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
        return SendResult(
            accepted=[r for r in recipients if r not in rejected],
            rejected={r: f"{code} {reply.decode(errors='replace')}" for r, (code, reply) in rejected.items()},
        )

    def _connection(self, *, fresh: bool) -> _PooledConnection:
        pooled: _PooledConnection | None = getattr(self._local, "connection", None)
        if pooled is not None and (fresh or pooled not in self._all):
            self._discard(pooled)
            pooled = None
        if pooled is None:
            pooled = _PooledConnection(self._connect())
            self._local.connection = pooled
            with self._all_lock:
                self._all.add(pooled)
        return pooled

    def _connect(self) -> smtplib.SMTP:
        config = self.config
        smtp: smtplib.SMTP
        if config.implicit_tls:
            smtp = smtplib.SMTP_SSL(
                config.host, config.port, timeout=config.timeout, context=config.tls_context()
            )
        else:
            smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
        try:
            smtp.ehlo()
            encrypted = config.implicit_tls or _upgrade(smtp, config)
            if config.username:
                if not encrypted and not config.allow_plaintext_auth:
                    raise PermanentError(_plaintext_login_refused(smtp, config))
                smtp.login(config.username, config.password or "")
        except BaseException:
            smtp.close()
            raise
        self.connections_opened += 1
        return smtp

    def _discard(self, pooled: _PooledConnection) -> None:
        with self._all_lock:
            self._all.discard(pooled)
        if getattr(self._local, "connection", None) is pooled:
            self._local.connection = None
        _quit(pooled.smtp)

    def _close_idle_connections(self) -> None:
        while not self._closed.wait(min(5.0, self.idle_timeout)):
            now = time.monotonic()
            with self._all_lock:
                idle = [p for p in self._all if now - p.last_used > self.idle_timeout]
            for pooled in idle:
                if pooled.lock.acquire(blocking=False):
                    try:
                        with self._all_lock:
                            self._all.discard(pooled)
                        _quit(pooled.smtp)
                    finally:
                        pooled.lock.release()

    def close(self) -> None:
        self._closed.set()
        with self._all_lock:
            pooled, self._all = list(self._all), set()
        for p in pooled:
            _quit(p.smtp)


def _upgrade(smtp: smtplib.SMTP, config: SmtpConfig) -> bool:
    """STARTTLS when the server offers it and the URL allows it: whether the link is now TLS.

    Raises:
        PermanentError: ``starttls=true`` and the server does not offer STARTTLS.
        ssl.SSLError: the server's certificate fails verification (retried, like a network error).
    """
    offered = smtp.has_extn("starttls")
    if config.starttls and not offered:
        raise PermanentError(f"SMTP server {config.host}:{config.port} does not offer STARTTLS")
    if not offered or not config.starttls_if_offered:
        return False
    smtp.starttls(context=config.tls_context())
    smtp.ehlo()
    return True


def _plaintext_login_refused(smtp: smtplib.SMTP, config: SmtpConfig) -> str:
    why = "starttls=false" if smtp.has_extn("starttls") else "the server does not offer STARTTLS"
    return (
        f"refusing to send the SMTP password of {config.username!r} in plaintext to "
        f"{config.host}:{config.port} ({why}): use smtps://, a server that offers STARTTLS, or "
        "add allow_plaintext_auth=true to CONVEYOR_SMTP_URL for a trusted relay on this host"
    )


def _mail_options(smtp: smtplib.SMTP, message: OutgoingMessage, config: SmtpConfig) -> list[str]:
    """SMTPUTF8 (RFC 6531) for a message naming an address with a non-ASCII local part."""
    if not message.smtputf8:
        return []
    if not smtp.has_extn("smtputf8"):
        raise PermanentError(
            f"the SMTP server {config.host}:{config.port} does not offer SMTPUTF8, which an address "
            "with a non-ASCII local part needs"
        )
    return ["SMTPUTF8", "BODY=8BITMIME"] if smtp.has_extn("8bitmime") else ["SMTPUTF8"]


def _network_error(exc: Exception) -> bool:
    """An OSError that is not an SMTP reply: the connection's state is unknown."""
    replies = (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused, smtplib.SMTPNotSupportedError)
    return isinstance(exc, OSError) and not isinstance(exc, replies)


def _reset(smtp: smtplib.SMTP) -> bool:
    """RSET: whether the connection is ready for a new transaction."""
    try:
        code, _ = smtp.rset()
    except (smtplib.SMTPException, OSError):
        return False
    return code == 250


def _quit(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


class FileOutbox:
    """``file://DIR``: one ``<job id>.eml`` per message, written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def from_url(cls, url: str) -> FileOutbox:
        parts = urlsplit(url)
        return cls(Path(unquote(parts.netloc + parts.path)).expanduser())

    def send(
        self,
        message: OutgoingMessage,
        sender: str,
        recipients: list[str],
        before_data: Callable[[], None],
        *,
        job_id: str,
    ) -> SendResult:
        self.folder.mkdir(parents=True, exist_ok=True)
        before_data()
        fd, temporary = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".eml.tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(message.as_bytes())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.folder / f"{job_id}.eml")
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return SendResult(accepted=list(recipients), rejected={})

    def close(self) -> None:
        """Nothing to close."""
