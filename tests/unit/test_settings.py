"""Settings: built from the environment, strict about what they accept, silent about secrets."""

from __future__ import annotations

import logging

import pytest

from jobs.errors import SettingsError
from jobs.logs import MaskSecretsFilter, mask_secrets
from jobs.settings import Settings, mask_url
from tests.helpers import secret


def test_defaults_match_the_spec() -> None:
    settings = Settings.from_env({})

    assert settings.broker_url == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert settings.database_url == "postgresql+psycopg://postgres@127.0.0.1:5432/conveyor"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.smtp_url == "file://./outbox"
    assert settings.namespace == "conveyor"
    assert settings.templates_dir is None
    assert settings.queue_name("email") == "conveyor.email"


def test_environment_values_are_read_and_flags_override_them() -> None:
    env = {"CONVEYOR_NAMESPACE": "staging", "CONVEYOR_MAX_PRIORITY": "9", "PATH": "/bin"}

    settings = Settings.from_env(env, namespace="ci", broker_url=None)

    assert settings.namespace == "ci"
    assert settings.max_priority == 9
    assert settings.broker_url.startswith("amqp://")


def test_an_unknown_conveyor_variable_is_an_error_that_suggests_the_right_name() -> None:
    with pytest.raises(
        SettingsError, match=r"unknown setting CONVEYOR_DATABSE_URL \(did you mean CONVEYOR_DATABASE_URL\?\)"
    ):
        Settings.from_env({"CONVEYOR_DATABSE_URL": "sqlite://"})


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CONVEYOR_BROKER_URL", "http://127.0.0.1", "must start with one of: amqp://, amqps://, memory://"),
        ("CONVEYOR_BROKER_URL", "amqp://guest:pw@127.0.0.1:99999/", "not a valid URL"),
        ("CONVEYOR_DATABASE_URL", "postgresql://", "names no host"),
        ("CONVEYOR_REDIS_URL", "memcached://127.0.0.1", "must start with one of"),
        ("CONVEYOR_SMTP_URL", "smtp:///nohost", "names no host"),
        ("CONVEYOR_NAMESPACE", "has space", "CONVEYOR_NAMESPACE='has space' is invalid"),
        ("CONVEYOR_MAX_PRIORITY", "high", "is not an integer"),
        ("CONVEYOR_MAX_PRIORITY", "300", "between 1 and 255"),
    ],
)
def test_malformed_values_are_clear_errors(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env({variable: value})


def test_an_error_about_a_url_never_shows_its_password() -> None:
    password = secret("broker")
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"CONVEYOR_BROKER_URL": f"http://user:{password}@127.0.0.1/"})

    assert password not in str(error.value)
    assert "http://user:***@127.0.0.1/" in str(error.value)


def test_repr_masks_every_password() -> None:
    passwords = [secret(name) for name in ("broker", "database", "redis", "smtp")]
    settings = Settings(
        broker_url=f"amqps://app:{passwords[0]}@mq.example:5671/prod",
        database_url=f"postgresql+psycopg://app:{passwords[1]}@db.example/conveyor",
        redis_url=f"redis://:{passwords[2]}@127.0.0.1:6379/0",
        smtp_url=f"smtps://mailer:{passwords[3]}@smtp.example:465",
    )

    shown = repr(settings) + str(settings)

    for password in passwords:
        assert password not in shown
    assert "amqps://app:***@mq.example:5671/prod" in shown
    assert "redis://:***@127.0.0.1:6379/0" in shown


def test_mask_url_leaves_urls_without_password_alone() -> None:
    assert mask_url("postgresql+psycopg://postgres@127.0.0.1:5432/conveyor") == (
        "postgresql+psycopg://postgres@127.0.0.1:5432/conveyor"
    )
    assert mask_url("amqp://u:p@[::1]:5672/") == "amqp://u:***@[::1]:5672/"


def test_log_records_have_url_passwords_masked() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "connecting to %s", ("amqp://u:pw1@h/",), None)

    MaskSecretsFilter().filter(record)

    assert record.getMessage() == "connecting to amqp://u:***@h/"
    assert mask_secrets("a smtp://x:y@h b redis://:z@h") == "a smtp://x:***@h b redis://:***@h"


def test_artifacts_go_to_a_folder_by_default_and_an_empty_variable_keeps_it() -> None:
    assert Settings().artifact_url == "file:.conveyor/artifacts"
    assert Settings.from_env({"CONVEYOR_ARTIFACT_URL": ""}).artifact_url == "file:.conveyor/artifacts"
    assert Settings.from_env({"CONVEYOR_ARTIFACT_URL": "file:///srv/a"}).artifact_url == "file:///srv/a"
    with pytest.raises(SettingsError, match="CONVEYOR_ARTIFACT_URL"):
        Settings(artifact_url="http://example.com/a")


# ---------------------------------------------------------------- retention


def test_retention_takes_a_default_and_per_kind_days_in_both_spellings() -> None:
    settings = Settings.from_env(
        {
            "CONVEYOR_RETENTION_DAYS": "30",
            "CONVEYOR_RETENTION_DAYS_EMAIL": "7",
            "CONVEYOR_RETENTION_DAYS_BY_KIND": "report=365,email=9",
        }
    )

    assert settings.retention_days == 30
    # The per-kind variable wins over the same kind in the list.
    assert settings.retention_days_by_kind == (("email", 7), ("report", 365))
    assert Settings.from_env({}).retention_days is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CONVEYOR_RETENTION_DAYS": "0"}, "at least 1"),
        ({"CONVEYOR_RETENTION_DAYS": "1.5"}, "whole number of days"),
        ({"CONVEYOR_RETENTION_DAYS_EMAIL": "soon"}, "whole number of days"),
        ({"CONVEYOR_RETENTION_DAYS_IMAGE": "-3"}, "at least 1"),
        ({"CONVEYOR_RETENTION_DAYS_BY_KIND": "email"}, "KIND=DAYS"),
        ({"CONVEYOR_RETENTION_DAY": "3"}, "unknown setting"),
    ],
)
def test_bad_retention_values_are_refused(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(environ)
