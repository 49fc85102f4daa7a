"""Job data shown by the CLI: never read as rich markup, never raw control characters on the
admin's terminal, secrets masked in every view and every ``--json``."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pika
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text
from sqlalchemy.exc import DataError

from cli import main
from jobs.settings import Settings
from jobs.store import Database
from tests.helpers import AMQP_URL, run_cli, secret

pytestmark = pytest.mark.integration

#: What a hostile producer or job puts in its data: rich markup that crashes or forges output,
#: a clear-screen and a colour escape, a right-to-left override, a NUL-free C1 control.
HOSTILE = "[/x] [link=http://evil]click[/link] \x1b[2J\x1b[31mred \u202eevil\u202c \x9b"
RAW = ("\x1b", "\u202e", "\u202c", "\x9b")


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def seed_hostile_job(db: Database, password: str, namespace: str) -> str:
    """A failed job (queue ``hostile`` of ``namespace``) whose payload, error, worker name and
    traceback are hostile text."""
    job_id = str(uuid.uuid4())
    payload = {
        "note": HOSTILE,
        "password": password,
        "callback": f"https://hooks.example/x?token={password}",
        "dsn": f"amqp://app:{password}@mq.example/",
    }
    now = datetime.now(UTC)
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (id, kind, queue, status, payload, result, error, attempts, created_at, "
                "started_at, finished_at) VALUES (:id, 'noop', :queue, 'failed', :payload, :result, "
                ":error, 1, :created, :created, :finished)"
            ),
            {
                "id": job_id,
                "queue": f"{namespace}.hostile",
                "payload": json.dumps(payload),
                "result": json.dumps({"echo": HOSTILE, "api_key": password}),
                "error": f"ValueError: {HOSTILE} at amqp://app:{password}@mq.example/",
                "created": now - timedelta(seconds=2),
                "finished": now,
            },
        )
        connection.execute(
            text(
                "INSERT INTO job_attempts (job_id, attempt, worker, host, pid, started_at, finished_at, "
                "outcome, error, traceback) VALUES (:id, 1, :worker, 'h', 1, :created, :finished, "
                "'failed', :error, :traceback)"
            ),
            {
                "id": job_id,
                "worker": f"w-{HOSTILE}",
                "created": now - timedelta(seconds=2),
                "finished": now,
                "error": f"ValueError: {HOSTILE}",
                "traceback": f"Traceback (most recent call last):\n  line 1\nValueError: {HOSTILE}\n",
            },
        )
    return job_id


def assert_safe(output: str, password: str) -> None:
    for raw in RAW:
        assert raw not in output, f"raw {raw!r} reached the terminal"
    assert password not in output


def test_jobs_show_prints_markup_and_escape_codes_of_job_data_as_visible_text(
    db: Database, service_env: dict[str, str]
) -> None:
    password = secret("hostile-payload")
    job_id = seed_hostile_job(db, password, service_env["CONVEYOR_NAMESPACE"])

    result = invoke(service_env, "jobs", "show", job_id)

    assert result.exit_code == 0, result.output
    assert "[/x]" in result.output  # shown as written, not read as a closing tag
    assert "[link=http://evil]" in result.output
    assert "\\x1b[2J" in result.output
    assert "\\u202e" in result.output
    assert_safe(result.output, password)


def test_every_listing_of_hostile_jobs_is_safe_and_masked(db: Database, service_env: dict[str, str]) -> None:
    password = secret("hostile-listing")
    job_id = seed_hostile_job(db, password, service_env["CONVEYOR_NAMESPACE"])

    for args in (["jobs", "list", "--queue", "hostile"], ["artifacts", "list"], ["stats"]):
        result = invoke(service_env, *args)
        assert result.exit_code == 0, (args, result.output)
        assert_safe(result.output, password)
    assert job_id in invoke(service_env, "jobs", "list", "--queue", "hostile").output


def test_every_json_output_masks_payload_secrets(db: Database, service_env: dict[str, str]) -> None:
    password = secret("json-payload")
    job_id = seed_hostile_job(db, password, service_env["CONVEYOR_NAMESPACE"])

    listed = invoke(service_env, "jobs", "list", "--queue", "hostile", "--json")
    shown = invoke(service_env, "jobs", "show", job_id, "--json")

    for result in (listed, shown):
        assert result.exit_code == 0, result.output
        assert_safe(result.output, password)
    (row,) = json.loads(listed.output)
    assert row["payload"]["password"] == "***"
    assert row["payload"]["callback"] == "https://hooks.example/x?token=***"
    assert row["payload"]["dsn"] == "amqp://app:***@mq.example/"
    assert row["result"]["api_key"] == "***"
    assert row["payload"]["note"] == HOSTILE  # the data itself survives, escaped by JSON
    assert json.loads(shown.output)["history"][0]["worker"] == f"w-{HOSTILE}"


def test_artifact_names_are_shown_as_text(db: Database, service_env: dict[str, str]) -> None:
    # Written as a foreign writer (or an older release) could: the view must not trust the name.
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO artifacts (id, name, content_type, size, sha256, data, created_at) "
                "VALUES (:id, :name, 'text/plain', 1, 'x', :data, :now)"
            ),
            {"id": str(uuid.uuid4()), "name": f"{HOSTILE}.txt", "data": b"x", "now": datetime.now(UTC)},
        )

    result = invoke(service_env, "artifacts", "list", "--limit", "5")

    assert result.exit_code == 0, result.output
    assert "[/x]" in result.output
    assert "\\x1b[2J" in result.output
    assert_safe(result.output, "\x00never")


def test_config_masks_secret_settings_and_credential_parameters(service_env: dict[str, str]) -> None:
    keys_secret, pg_secret, smtp_secret = secret("config-keys"), secret("config-pg"), secret("config-smtp")
    import base64

    key = base64.b64encode(b"k" * 32).decode()
    env = {
        **service_env,
        "CONVEYOR_ENCRYPTION_KEYS": f"k1:{key}",
        "CONVEYOR_SMTP_URL": f"smtp://mailer:{smtp_secret}@127.0.0.1:2525",
        "CONVEYOR_RABBITMQ_API_URL": f"http://127.0.0.1:15672/?password={pg_secret}",
    }

    shown = run_cli("config", env=env)
    as_json = run_cli("config", "--json", env=env)

    for result in (shown, as_json):
        assert result.returncode == 0, result.stderr
        for hidden in (key, keys_secret, pg_secret, smtp_secret):
            assert hidden not in result.stdout + result.stderr
    data = json.loads(as_json.stdout)
    assert data["encryption_keys"] == "***"
    assert data["rabbitmq_api_url"] == "http://127.0.0.1:15672/?password=***"


def test_a_slash_in_a_password_is_never_printed(service_env: dict[str, str]) -> None:
    password = secret("slashed") + "/tail"

    for variable, url in (
        ("CONVEYOR_BROKER_URL", f"amqp://app:{password}@127.0.0.1:5672/%2F"),
        ("CONVEYOR_DATABASE_URL", f"postgresql+psycopg://app:{password}@127.0.0.1:5432/x"),
        ("CONVEYOR_REDIS_URL", f"redis://:{password}@127.0.0.1:6379/0"),
    ):
        result = run_cli("jobs", "list", env={**service_env, variable: url})

        assert result.returncode == 2, result.stderr
        assert password.split("/")[0] not in result.stderr + result.stdout
        assert "tail" not in result.stderr + result.stdout
        assert "percent-encoded" in result.stderr


def test_a_refused_statement_never_quotes_its_values(db: Database) -> None:
    password = secret("statement value")
    payload = json.dumps({"password": password, "note": "\u0000"})  # PostgreSQL refuses \u0000 in jsonb

    with pytest.raises(DataError) as error, db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (id, kind, queue, status, payload, attempts, created_at) "
                "VALUES (:id, 'noop', 'refused', 'queued', :payload, 0, :now)"
            ),
            {"id": str(uuid.uuid4()), "payload": payload, "now": datetime.now(UTC)},
        )

    assert "unsupported Unicode escape sequence" in str(error.value)
    assert password not in str(error.value)
    logging.getLogger("conveyor.test").error("refused", exc_info=error.value)  # the log scan checks it


def test_dead_letters_of_a_hostile_foreign_producer_are_listed_as_text(
    settings: Settings, service_env: dict[str, str]
) -> None:
    queue = f"{settings.namespace}.default.XQ"
    message = {"message_id": HOSTILE, "actor_name": HOSTILE, "queue_name": "x", "args": [], "kwargs": {}}
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        channel.basic_publish("", queue, json.dumps(message).encode())
        channel.basic_publish("", queue, HOSTILE.encode() + b"\xff not json")
    finally:
        connection.close()

    result = invoke(service_env, "dlq", "list")

    assert result.exit_code == 0, result.output
    assert "[/x]" in result.output
    assert_safe(result.output, "\x00never")
