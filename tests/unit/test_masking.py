"""Secrets masked in URLs, free text, JSON documents and log records; job text made visible."""

from __future__ import annotations

import logging
import sys

import pytest

from console.text import cell, visible
from jobs.errors import SettingsError
from jobs.logs import MaskSecretsFilter, configure_logging, mask_document, mask_secrets
from jobs.settings import Settings, mask_url
from tests.helpers import secret


@pytest.mark.parametrize(
    "parameter", ["password", "passwd", "pwd", "secret", "token", "api_key", "access_key", "sslpassword"]
)
def test_credential_query_parameters_are_masked(parameter: str) -> None:
    password = secret(parameter)
    url = f"postgresql://app@db.example/conveyor?sslmode=require&{parameter}={password}&x=1"

    assert mask_url(url) == f"postgresql://app@db.example/conveyor?sslmode=require&{parameter}=***&x=1"
    assert mask_secrets(f"failed: {url}") == f"failed: {mask_url(url)}"


def test_a_password_with_an_unencoded_slash_is_masked_whole() -> None:
    password = secret("slashed", tail="/rest?x#y")
    url = f"amqp://app:{password}@mq.example:5672/%2F"

    assert mask_url(url) == "amqp://app:***@mq.example:5672/%2F"
    assert mask_secrets(f"cannot reach {url} now") == "cannot reach amqp://app:***@mq.example:5672/%2F now"


def test_a_url_with_an_unencoded_slash_in_its_password_is_refused_without_showing_it() -> None:
    password = secret("slashed", tail="/x")

    with pytest.raises(SettingsError) as error:
        Settings(database_url=f"postgresql+psycopg://app:{password}@db.example/conveyor")

    assert password.split("/")[0] not in str(error.value)
    assert "percent-encoded" in str(error.value)


def test_ports_and_addresses_in_queries_are_not_mistaken_for_passwords() -> None:
    for url in ("http://h:8080/x?to=a@b.example", "smtp://host/p?x=a@b"):
        assert mask_url(url) == url
        assert mask_secrets(url) == url
    text = "amqp://h:5672/%2F and bob@example.com"
    assert mask_secrets(text) == text


def test_json_documents_mask_secret_keys_and_urls_at_any_depth() -> None:
    password = secret("document")
    document = [{"context": {"Password": password, "reset_url": f"https://x.example/r?token={password}"}}]

    masked = mask_document(document)

    assert masked == [{"context": {"Password": "***", "reset_url": "https://x.example/r?token=***"}}]
    assert password not in repr(masked)


def test_settings_masked_hides_secret_fields_and_url_passwords() -> None:
    password = secret("smtp")
    settings = Settings(smtp_url=f"smtp://u:{password}@h:25", encryption_keys="k1:" + "A" * 43 + "=")

    shown = settings.masked()

    assert shown["encryption_keys"] == "***"
    assert shown["smtp_url"] == "smtp://u:***@h:25"


def test_log_records_have_passwords_masked_in_their_exceptions_too() -> None:
    password = secret("exception")
    try:
        raise ConnectionError(f"cannot connect to amqp://u:{password}@h/")
    except ConnectionError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())

    MaskSecretsFilter().filter(record)

    assert record.exc_text is not None
    assert password not in record.exc_text
    assert "amqp://u:***@h/" in record.exc_text


def test_configure_logging_keeps_handlers_it_did_not_install() -> None:
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    before = list(root.handlers)
    try:
        configure_logging(logging.INFO)
        configure_logging(logging.WARNING)

        # Every handler it did not install stays (an earlier test may have left one of its own,
        # which it replaces), and it has exactly one, however often it is called.
        theirs = [h for h in before if type(h).__name__ != "_ConveyorHandler"]
        assert foreign in root.handlers
        assert [h for h in root.handlers if type(h).__name__ != "_ConveyorHandler"] == theirs
        assert len(root.handlers) == len(theirs) + 1
    finally:
        root.handlers[:] = before
        root.removeHandler(foreign)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2Jred", "\\x1b[2Jred"),
        ("a\u202eb", "a\\u202eb"),
        ("nul\x00", "nul\\x00"),
        ("c1\x9b", "c1\\x9b"),
        ("line\nbreak", "line\\x0abreak"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("plain ünïcode ✓", "plain ünïcode ✓"),
    ],
)
def test_control_and_invisible_characters_are_made_visible(raw: str, shown: str) -> None:
    assert visible(raw) == shown


def test_cells_escape_markup_and_keep_newlines_only_when_asked() -> None:
    assert cell("[/x] [bold]") == "\\[/x] \\[bold]"
    assert cell(None) == ""
    assert visible("a\nb\tc", newlines=True) == "a\nb\\x09c"


def test_a_log_record_is_one_line_without_control_characters() -> None:
    error = "bad template '\x1b[2J'\n2026-12-07 00:00:00 1 INFO conveyor: forged line"
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "job failed: %s", (error,), None)

    MaskSecretsFilter().filter(record)

    assert record.getMessage() == (
        "job failed: bad template '\\x1b[2J'\\x0a2026-12-07 00:00:00 1 INFO conveyor: forged line"
    )
