"""Conveyor over TLS to PostgreSQL (``sslmode=verify-full``), RabbitMQ (``amqps://``) and
Redis (``rediss://``), against real TLS listeners (tests/tls.py) that refuse plain connections; and
a wrong CA ends a command or a worker with exit code 3 and one line."""

from __future__ import annotations

import json
import os
import ssl
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import pytest
from sqlalchemy import text

from jobs.admin.operations import Operations
from jobs.admin.queues import rabbitmq_counts
from jobs.broker import check_broker
from jobs.errors import RegistryUnavailable, ServiceUnavailable, SettingsError
from jobs.redis_lite import LiteRedis, redis_client, registry_client
from jobs.services import check_redis_certificate
from jobs.settings import Settings, check_tls_files
from jobs.store import Database
from jobs.tls import certificate_failure
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


def test_the_worker_registry_reaches_rediss_with_the_ca_verified_and_refuses_the_wrong_ca(
    tls_settings: Settings, tls_services: TlsServices
) -> None:
    client = registry_client(tls_settings.redis_url)
    assert isinstance(client, LiteRedis)  # not redis-py: a worker's own client
    try:
        assert client.ping() is True
    finally:
        client.close()

    ca, wrong = quote(str(tls_services.certs.ca)), quote(str(tls_services.certs.wrong_ca))
    refused = registry_client(tls_settings.redis_url.replace(ca, wrong))
    with pytest.raises(RegistryUnavailable) as failure:
        refused.ping()
    assert certificate_failure(failure.value) is not None
    plain = registry_client(tls_settings.redis_url.replace("rediss://", "redis://").split("?")[0])
    with pytest.raises(RegistryUnavailable):  # the TLS listener refuses plain connections
        plain.ping()


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
    missing = Settings(broker_url="amqps://localhost/%2F?cafile=/nowhere/ca.pem")
    with pytest.raises(SettingsError, match="is not a file"):
        check_tls_files(missing)
    with pytest.raises(SettingsError, match="No such file"):
        check_broker(missing)


def test_a_certificate_for_another_host_name_is_refused_by_every_service(tls_settings: Settings) -> None:
    # The servers' certificate names localhost alone: by its address, each server is an impostor.
    by_address = replace(
        tls_settings,
        broker_url=tls_settings.broker_url.replace("localhost", "127.0.0.1"),
        redis_url=tls_settings.redis_url.replace("localhost", "127.0.0.1"),
    )
    with pytest.raises(
        ServiceUnavailable, match=r"RabbitMQ .* certificate verify failed: IP address mismatch"
    ):
        check_broker(by_address)
    with pytest.raises(ServiceUnavailable, match=r"Redis .* certificate verify failed: IP address mismatch"):
        check_redis_certificate(by_address)
    database = Database(tls_settings.database_url.replace("localhost", "127.0.0.1"))
    try:
        with pytest.raises(ServiceUnavailable, match=r'does not match host name "127\.0\.0\.1"'):
            database.check()
    finally:
        database.dispose()


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
        ("database", "PostgreSQL", "postgresql+psycopg://postgres@localhost:25432/", ["db", "upgrade"]),
        ("database", "PostgreSQL", "postgresql+psycopg://postgres@localhost:25432/", ["jobs", "list"]),
        ("broker", "RabbitMQ", "amqps://guest:***@localhost:5671/", ["queues"]),
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


# ---------------------------------------------------------------- the management API over HTTPS


class _FakeManagementApi(BaseHTTPRequestHandler):
    """Answers every queue lookup as RabbitMQ's management API would, with 3 unacknowledged."""

    def do_GET(self) -> None:
        body = json.dumps({"messages_unacknowledged": 3, "message_stats": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def https_api(tls_services: TlsServices) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeManagementApi)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_services.certs.cert, tls_services.certs.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_the_management_api_is_read_over_https_with_the_given_ca(
    tls_settings: Settings, tls_services: TlsServices, tls_db: Database, https_api: int
) -> None:
    api = f"https://guest:guest@localhost:{https_api}?cafile={quote(str(tls_services.certs.ca))}"
    wrong = api.replace(quote(str(tls_services.certs.ca)), quote(str(tls_services.certs.wrong_ca)))

    stats = Operations(replace(tls_settings, rabbitmq_api_url=api), tls_db).queues()
    assert {queue.unacked for queue in stats} == {3}
    with pytest.raises(ServiceUnavailable, match=r"RabbitMQ management API .* certificate verify failed"):
        Operations(replace(tls_settings, rabbitmq_api_url=wrong), tls_db).queues()
