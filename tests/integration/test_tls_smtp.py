"""SMTP over TLS against real aiosmtpd servers: SMTPS, STARTTLS whenever the server offers it,
certificates verified, and a password never sent over a plain connection."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jobs.email.message import Envelope, build_message
from jobs.email.templates import RenderedEmail
from jobs.email.transport import SmtpConfig, SmtpTransport
from jobs.errors import PermanentError, SettingsError
from jobs.settings import Settings, check_tls_files
from tests.smtp import SmtpServer
from tests.tls import Certificates, make_certificates

pytestmark = pytest.mark.integration

CREDENTIALS = ("mailer", "s3cret-smtp-pass")
LOGIN = "mailer:s3cret-smtp-pass@"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("smtp-certs"))


@pytest.fixture
def server_context(certs: Certificates) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    return context


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., SmtpServer]]:
    """Start aiosmtpd servers with the given options; all are stopped when the test ends."""
    started: list[SmtpServer] = []

    def start(**options: object) -> SmtpServer:
        server = SmtpServer(**options).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def send_one(url: str) -> None:
    """One email through Conveyor's SMTP transport, as a worker sends it."""
    transport = SmtpTransport(SmtpConfig.from_url(url))
    envelope = Envelope(sender="noreply@example.com", to=["ada@example.com"])
    message = build_message("job-1", envelope, RenderedEmail("Hi", "Hello", None), [])
    try:
        transport.send(message, "noreply@example.com", ["ada@example.com"], lambda: None)
    finally:
        transport.close()


def url_of(server: SmtpServer) -> str:
    """The server's URL by the name its certificate is for."""
    return server.url.replace("127.0.0.1", "localhost")


def with_login(server: SmtpServer, query: str = "") -> str:
    scheme, rest = url_of(server).split("://")
    return f"{scheme}://{LOGIN}{rest}{query}"


def test_a_password_is_never_sent_over_a_plain_connection(
    smtp_server: Callable[..., SmtpServer],
) -> None:
    # A careless server that takes a login in plaintext, and offers no STARTTLS.
    server = smtp_server(credentials=CREDENTIALS, auth_require_tls=False)

    with pytest.raises(PermanentError, match=r"refusing to send the SMTP password .* in plaintext"):
        send_one(with_login(server))

    assert server.handler.logins == []
    assert server.received == []


def test_allow_plaintext_auth_is_the_explicit_opt_in_for_a_trusted_relay(
    smtp_server: Callable[..., SmtpServer],
) -> None:
    server = smtp_server(credentials=CREDENTIALS, auth_require_tls=False)

    send_one(with_login(server, "?allow_plaintext_auth=true"))

    assert server.handler.logins == [False]
    assert len(server.received) == 1


def test_smtp_upgrades_to_starttls_whenever_the_server_offers_it(
    smtp_server: Callable[..., SmtpServer], server_context: ssl.SSLContext, certs: Certificates
) -> None:
    # STARTTLS offered, not required; the login is only accepted over TLS.
    server = smtp_server(tls_context=server_context, require_starttls=False, credentials=CREDENTIALS)

    send_one(with_login(server, f"?cafile={certs.ca}"))

    assert server.handler.logins == [True]
    assert [r.tls for r in server.received] == [True]


def test_an_anonymous_connection_upgrades_too(
    smtp_server: Callable[..., SmtpServer], server_context: ssl.SSLContext, certs: Certificates
) -> None:
    server = smtp_server(tls_context=server_context, require_starttls=False)

    send_one(f"{url_of(server)}?cafile={certs.ca}")

    assert [r.tls for r in server.received] == [True]


def test_an_opportunistic_upgrade_verifies_the_certificate(
    smtp_server: Callable[..., SmtpServer], server_context: ssl.SSLContext, certs: Certificates
) -> None:
    server = smtp_server(tls_context=server_context, require_starttls=False)

    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        send_one(f"{url_of(server)}?cafile={certs.wrong_ca}")

    assert server.received == []


def test_starttls_false_keeps_a_local_relay_in_plaintext(
    smtp_server: Callable[..., SmtpServer], server_context: ssl.SSLContext
) -> None:
    server = smtp_server(tls_context=server_context, require_starttls=False)

    send_one(f"{url_of(server)}?starttls=false")

    assert [r.tls for r in server.received] == [False]


def test_starttls_true_refuses_a_server_that_does_not_offer_it(
    smtp_server: Callable[..., SmtpServer],
) -> None:
    server = smtp_server()

    with pytest.raises(PermanentError, match="does not offer STARTTLS"):
        send_one(f"{url_of(server)}?starttls=true")

    assert server.received == []


def test_smtps_logs_in_and_sends_over_tls_from_the_first_byte(
    smtp_server: Callable[..., SmtpServer], server_context: ssl.SSLContext, certs: Certificates
) -> None:
    server = smtp_server(tls_context=server_context, implicit_tls=True, credentials=CREDENTIALS)

    send_one(with_login(server, f"?cafile={certs.ca}"))

    assert server.url.startswith("smtps://")
    assert server.handler.logins == [True]
    assert [r.tls for r in server.received] == [True]


def test_smtps_with_the_wrong_ca_sends_nothing(
    smtp_server: Callable[..., SmtpServer], server_context: ssl.SSLContext, certs: Certificates
) -> None:
    server = smtp_server(tls_context=server_context, implicit_tls=True, credentials=CREDENTIALS)

    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        send_one(with_login(server, f"?cafile={certs.wrong_ca}"))

    assert server.handler.logins == []
    assert server.received == []


def test_smtp_tls_parameters_are_checked_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="starttls='maybe' must be auto, true or false"):
        Settings(smtp_url="smtp://mail.example?starttls=maybe")
    with pytest.raises(SettingsError, match=r"cafile .* is not a file"):
        check_tls_files(Settings(smtp_url=f"smtps://mail.example?cafile={tmp_path / 'missing.pem'}"))
    assert Settings(smtp_url="smtp://u:p@mail.example?allow_plaintext_auth=true&starttls=auto")
