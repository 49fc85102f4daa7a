"""Issue 15: Conveyor over TLS to PostgreSQL (``sslmode=verify-full``), RabbitMQ (``amqps://``) and
Redis (``rediss://``), against real TLS listeners (tests/tls.py) that refuse plain connections; and
a wrong CA ends a command or a worker with exit code 3 and one line."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import quote

import pytest
from sqlalchemy import text

from jobs.admin.queues import rabbitmq_counts
from jobs.broker import check_broker
from jobs.errors import ServiceUnavailable, SettingsError
from jobs.services import check_redis_certificate, redis_client
from jobs.settings import Settings
from jobs.store import Database
from producers import Client
from tests.helpers import run_cli
from tests.tls import TlsServices, tls_group

pytestmark = [pytest.mark.integration, tls_group]


@pytest.fixture
def tls_db(tls_settings: Settings) -> Iterator[Database]:
    database = Database(tls_settings.database_url)
    yield database
    database.dispose()


def test_the_job_store_talks_to_postgresql_over_verified_tls(tls_db: Database) -> None:
    with tls_db.session() as session:
        in_tls = session.execute(text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).scalar()

    assert in_tls is True


def test_the_tls_cluster_refuses_a_connection_without_tls(tls_settings: Settings) -> None:
    # So that every other test here proves TLS was used, not merely allowed.
    plain = Database(tls_settings.database_url.replace("sslmode=verify-full", "sslmode=disable"))
    try:
        with pytest.raises(ServiceUnavailable, match="no encryption"):
            plain.check()
    finally:
        plain.dispose()


def test_producers_publish_and_admins_read_queues_over_amqps(
    tls_settings: Settings, tls_db: Database
) -> None:
    check_broker(tls_settings)
    with Client(tls_settings, db=tls_db) as client:
        one = client.enqueue("noop", sleep=0)
        many = client.enqueue_many("noop", [{"sleep": 0}, {"sleep": 0}])  # the pipelined publisher

    queue = tls_settings.queue_name("default")
    assert rabbitmq_counts(tls_settings, [queue])[queue] == (1 + len(many), 0)
    assert one.status.value == "queued"


def test_redis_is_reached_over_rediss_with_the_ca_verified(tls_settings: Settings) -> None:
    check_redis_certificate(tls_settings)
    client = redis_client(tls_settings.redis_url)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_a_client_certificate_can_be_presented_to_rabbitmq(tls_services: TlsServices, namespace: str) -> None:
    client_pem = quote(str(tls_services.certs.client))
    settings = Settings(
        broker_url=f"{tls_services.rabbitmq.url(tls_services.certs.ca)}&certfile={client_pem}"
    )

    check_broker(settings)


def test_broker_tls_parameters_are_checked_when_settings_are_built(tls_services: TlsServices) -> None:
    ca = quote(str(tls_services.certs.ca))
    with pytest.raises(SettingsError, match="are for amqps:// URLs only"):
        Settings(broker_url=f"amqp://guest:guest@localhost:5672/%2F?cafile={ca}")
    with pytest.raises(SettingsError, match="keyfile= needs certfile="):
        Settings(broker_url=f"amqps://localhost/%2F?keyfile={ca}")
    with pytest.raises(SettingsError, match="is not a file"):
        Settings(broker_url="amqps://localhost/%2F?cafile=/nowhere/ca.pem")


# ---------------------------------------------------------------- a wrong CA: exit 3, one line


def wrong_ca_env(settings: Settings, services: TlsServices, service: str) -> dict[str, str]:
    """The environment of a `conveyor` command that trusts the wrong CA for ``service`` alone."""
    ca, wrong = str(services.certs.ca), str(services.certs.wrong_ca)
    urls = {
        "broker": settings.broker_url,
        "database": settings.database_url,
        "redis": settings.redis_url,
    }
    urls[service] = urls[service].replace(quote(ca), quote(wrong))
    assert quote(wrong) in urls[service]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update({f"CONVEYOR_{name.upper()}_URL": url for name, url in urls.items()})
    env["CONVEYOR_NAMESPACE"] = settings.namespace
    return env


def assert_one_clear_line(result: object, service: str, url_start: str) -> None:
    code, stderr = result.returncode, result.stderr  # type: ignore[attr-defined]
    lines = stderr.strip().splitlines()
    assert code == 3, stderr
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith(f"conveyor: error: {service} is unreachable at {url_start}"), lines[0]
    assert "certificate verify failed" in lines[0]


@pytest.mark.parametrize(
    ("service", "name", "url_start", "command"),
    [
        ("database", "PostgreSQL", "postgresql+psycopg://postgres@localhost:55432/", ["db", "upgrade"]),
        ("database", "PostgreSQL", "postgresql+psycopg://postgres@localhost:55432/", ["jobs", "list"]),
        ("broker", "RabbitMQ", "amqps://guest:***@localhost:5671/", ["queues"]),
        ("broker", "RabbitMQ", "amqps://guest:***@localhost:5671/", ["enqueue", "noop"]),
        ("redis", "Redis", "rediss://localhost:6390/0", ["workers"]),
    ],
)
def test_a_wrong_ca_ends_a_command_with_exit_3_and_one_line(
    tls_settings: Settings,
    tls_services: TlsServices,
    service: str,
    name: str,
    url_start: str,
    command: list[str],
) -> None:
    result = run_cli(*command, env=wrong_ca_env(tls_settings, tls_services, service))

    assert_one_clear_line(result, name, url_start)


@pytest.mark.parametrize(
    ("service", "name"), [("database", "PostgreSQL"), ("broker", "RabbitMQ"), ("redis", "Redis")]
)
def test_a_worker_with_a_wrong_ca_exits_with_code_3(
    tls_settings: Settings, tls_services: TlsServices, service: str, name: str
) -> None:
    result = run_cli("worker", "--processes", "1", env=wrong_ca_env(tls_settings, tls_services, service))

    assert result.returncode == 3, result.stderr
    assert f"conveyor: error: {name} is unreachable at " in result.stderr
    assert "certificate verify failed" in result.stderr
    assert "Traceback" not in result.stderr


def test_redis_down_is_still_not_a_reason_to_stop(tls_settings: Settings) -> None:
    # An outage (nothing listening) is tolerated at start-up; only a certificate mistake is not.
    check_redis_certificate(replace(tls_settings, redis_url="rediss://localhost:1/0"))
