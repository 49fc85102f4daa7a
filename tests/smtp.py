"""A real SMTP server (aiosmtpd) inside the test process, scriptable per test."""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage
    at: float
    #: Whether the message came over TLS (SMTPS, or after STARTTLS).
    tls: bool = False


@dataclass
class Behaviour:
    """What the server answers; tests change it before or while workers send."""

    #: Replies to DATA, used up one by one (e.g. ["451 try later"] * 2); then "250 OK".
    data_replies: list[str] = field(default_factory=list)
    #: Recipients refused at RCPT with this reply.
    refused: dict[str, str] = field(default_factory=dict)
    #: Called with the message after it is stored, before the 250 reply goes out.
    after_accept: Callable[[EmailMessage], None] | None = None


class RecordingHandler:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.behaviour = Behaviour()
        self.connections = 0
        #: AUTH attempts (whatever their outcome), and whether each came over TLS.
        self.logins: list[bool] = []
        self.lock = threading.Lock()

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ):
        with self.lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        reply = self.behaviour.refused.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.behaviour.data_replies:
            return self.behaviour.data_replies.pop(0)
        if envelope.smtp_utf8:  # RFC 6532: the headers may hold UTF-8 as it is
            message = email.message_from_string(envelope.content.decode(), policy=email.policy.default)
        else:
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.received.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    message,
                    time.monotonic(),
                    tls=_over_tls(server, session),
                )
            )
        if self.behaviour.after_accept is not None:
            self.behaviour.after_accept(message)  # type: ignore[arg-type]
        return "250 OK: queued"


def _over_tls(server: Any, session: Any) -> bool:
    """After STARTTLS aiosmtpd fills ``session.ssl``; with SMTPS only the transport knows."""
    return session.ssl is not None or server.transport.get_extra_info("sslcontext") is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmtpServer:
    def __init__(
        self,
        *,
        tls_context: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
        smtputf8: bool = False,
        require_starttls: bool = True,
        implicit_tls: bool = False,
        auth_require_tls: bool = True,
    ):
        """``tls_context``: offer STARTTLS with it (required unless ``require_starttls=False``),
        or with ``implicit_tls`` speak TLS from the first byte (SMTPS). ``auth_require_tls=False``
        accepts a login on a plain connection (the careless server a client must not trust)."""
        self.handler = RecordingHandler()
        self.port = free_port()
        self.implicit_tls = implicit_tls
        kwargs: dict[str, Any] = {"enable_SMTPUTF8": smtputf8}
        if tls_context is not None and implicit_tls:
            kwargs.update(ssl_context=tls_context)
        elif tls_context is not None:
            kwargs.update(tls_context=tls_context, require_starttls=require_starttls)
        if credentials is not None:
            # aiosmtpd offers AUTH over STARTTLS only, unless told it may offer it without: SMTPS
            # (TLS already) and the careless server; it then cannot also require a login.
            plain_auth = implicit_tls or not auth_require_tls
            kwargs.update(
                authenticator=_authenticator(credentials, self.handler),
                auth_required=not plain_auth,
                auth_require_tls=not plain_auth,
            )
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **kwargs)

    @property
    def url(self) -> str:
        return f"{'smtps' if self.implicit_tls else 'smtp'}://127.0.0.1:{self.port}"

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


def _authenticator(credentials: tuple[str, str], handler: RecordingHandler) -> Callable[..., AuthResult]:
    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        with handler.lock:
            handler.logins.append(_over_tls(server, session))
        ok = (
            isinstance(auth_data, LoginPassword)
            and (auth_data.login.decode(), auth_data.password.decode()) == credentials
        )
        return AuthResult(success=ok, handled=False)

    return authenticate
