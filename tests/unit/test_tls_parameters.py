"""How TLS parameters are read from Conveyor's URLs, and how a failed certificate check
reads whatever driver reported it (pure logic; the real listeners are in tests/integration)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pika.exceptions
import pytest
import trustme
from pika.adapters.utils.connection_workflow import AMQPConnectionWorkflowFailed

from jobs.broker import amqp_url, broker_parameters
from jobs.email.transport import SmtpConfig
from jobs.errors import SettingsError
from jobs.settings import Settings, check_tls_files
from jobs.tls import certificate_failure, explained

VERIFY = (
    "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer "
    "certificate (_ssl.c:1006)"
)


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def test_amqps_verifies_the_server_against_the_given_ca_and_hides_the_parameter_from_pika(
    ca_file: Path,
) -> None:
    settings = Settings(broker_url=f"amqps://u:p@rabbit.internal/%2F?cafile={ca_file}&heartbeat=10")

    [parameters] = broker_parameters(settings)

    assert "cafile" not in amqp_url(settings)
    assert "heartbeat=10" in amqp_url(settings)
    assert (parameters.host, parameters.port) == ("rabbit.internal", 5671)
    context = parameters.ssl_options.context
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.get_ca_certs()  # the given CA is loaded


def test_plain_amqp_has_no_tls_and_amqps_without_a_cafile_trusts_the_system_cas() -> None:
    assert broker_parameters(Settings(broker_url="amqp://u:p@rabbit.internal/%2F"))[0].ssl_options is None
    context = broker_parameters(Settings(broker_url="amqps://u:p@rabbit.internal/%2F"))[0].ssl_options.context
    assert context.verify_mode is ssl.CERT_REQUIRED


def test_an_unreadable_ca_file_is_a_settings_error_naming_the_url(tmp_path: Path) -> None:
    settings = Settings(broker_url=f"amqps://u:secret@rabbit.internal/%2F?cafile={tmp_path / 'nope.pem'}")

    with pytest.raises(SettingsError, match=r"CONVEYOR_BROKER_URL=amqps://u:\*\*\*@") as caught:
        broker_parameters(settings)
    assert "secret" not in str(caught.value)
    with pytest.raises(SettingsError, match="is not a file"):
        check_tls_files(settings)


def test_tls_file_parameters_of_every_url_are_checked(tmp_path: Path, ca_file: Path) -> None:
    missing = tmp_path / "missing.pem"
    for settings in (
        Settings(database_url=f"postgresql+psycopg://db/x?sslmode=verify-full&sslrootcert={missing}"),
        Settings(redis_url=f"rediss://cache:6380/0?ssl_ca_certs={missing}"),
        Settings(smtp_url=f"smtps://mail.example?cafile={missing}"),
    ):
        with pytest.raises(SettingsError, match="is not a file"):
            check_tls_files(settings)
    check_tls_files(Settings(database_url="postgresql+psycopg://db/x?sslmode=verify-full&sslrootcert=system"))
    check_tls_files(Settings(redis_url=f"rediss://cache:6380/0?ssl_ca_certs={ca_file}"))


def test_smtp_starttls_is_opportunistic_unless_required_or_refused() -> None:
    auto = SmtpConfig.from_url("smtp://mail.example:587")
    required = SmtpConfig.from_url("smtp://mail.example:587?starttls=true")
    never = SmtpConfig.from_url("smtp://mail.example:25?starttls=false")

    assert (auto.starttls, auto.starttls_if_offered, auto.allow_plaintext_auth) == (False, True, False)
    assert (required.starttls, required.starttls_if_offered) == (True, True)
    assert (never.starttls, never.starttls_if_offered) == (False, False)
    assert SmtpConfig.from_url("smtp://u:p@relay:25?allow_plaintext_auth=1").allow_plaintext_auth is True


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            ssl.SSLCertVerificationError(1, VERIFY),
            "certificate verify failed: unable to get local issuer certificate",
        ),
        (  # pika wraps the TLS error twice and prints its repr
            pika.exceptions.AMQPConnectionError(
                AMQPConnectionWorkflowFailed(
                    [ssl.SSLCertVerificationError(1, VERIFY)], ("h", 5671)
                )
            ),
            "certificate verify failed: unable to get local issuer certificate",
        ),
        (  # libpq
            OSError('connection to server at "127.0.0.1", port 55432 failed: '
                    "SSL error: certificate verify failed"),
            "certificate verify failed",
        ),
        (  # redis-py: its own words, the SSL error as the cause
            ConnectionError("Error 1 connecting to localhost:6390. [SSL: CERTIFICATE_VERIFY_FAILED] "
                            "certificate verify failed: Hostname mismatch, certificate is not valid for "
                            "'cache'. (_ssl.c:1006)."),
            "certificate verify failed: Hostname mismatch, certificate is not valid for 'cache'",
        ),
    ],
)  # fmt: skip
def test_a_failed_certificate_check_reads_the_same_from_every_driver(
    error: BaseException, expected: str
) -> None:
    assert certificate_failure(error) == expected
    assert explained(error) == expected


def wrapped_verify_error() -> ConnectionError:
    """A driver's own error raised from the TLS error (``raise ... from``)."""
    try:
        raise ssl.SSLCertVerificationError(1, VERIFY)
    except ssl.SSLError as inner:
        outer = ConnectionError("TLS handshake failed")
        outer.__cause__ = inner
        return outer


def test_a_cause_is_searched_and_other_errors_keep_their_first_line() -> None:
    expected = "certificate verify failed: unable to get local issuer certificate"
    assert certificate_failure(wrapped_verify_error()) == expected

    refused = ConnectionRefusedError(111, "Connection refused")
    assert certificate_failure(refused) is None
    assert explained(refused) == "[Errno 111] Connection refused"
    assert explained(pika.exceptions.AMQPConnectionError()) == "AMQPConnectionError"
