"""Test fixtures. Integration tests talk to the real RabbitMQ, PostgreSQL and Redis on 127.0.0.1.

Each test session (each xdist worker is one) gets a database of its own; each test gets a
namespace of its own, so that runs never see each other's queues or rows.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator

import pika
import pytest
from sqlalchemy import create_engine, text

from jobs.kinds import ACTOR_KINDS, KINDS, register
from jobs.settings import Settings
from jobs.store import Database, JobStore
from jobs.store.migrate import ensure_database, upgrade
from producers import Client

# Debian's Chromium for the session (tests/browser.py), started by the first test that asks.
from tests.browser import browser  # noqa: F401
from tests.helpers import WorkerProcess, queue_names, secret

# The log scan (tests/logscan.py) for every test: autouse fixtures, active wherever they are imported.
from tests.logscan import _log_scan_attached, log_scan  # noqa: F401

# A real Prometheus for the session (tests/prometheus.py), started by the first test that asks.
from tests.prometheus import prometheus  # noqa: F401
from tests.tls import TlsServices, running_tls_services

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
# pytester: for the test that proves the log scan can fail.
pytest_plugins = ["pytester"]
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"

# The app's own variables must not leak in from the developer's shell.
for _name in [n for n in os.environ if n.startswith("CONVEYOR_")]:
    del os.environ[_name]


@pytest.fixture(scope="session")
def session_token(worker_id: str) -> str:
    return f"{worker_id}{secrets.token_hex(3)}"


@pytest.fixture(scope="session")
def database_url(session_token: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session; dropped afterwards."""
    # The loopback server trusts its clients, so it never checks this password: the URL carries
    # one all the same, registered with the log scan, so that every log line and error naming
    # the database proves the password masked.
    password = secret("session database")
    url = f"postgresql+psycopg://postgres:{password}@127.0.0.1:5432/conveyor_test_{session_token}"
    ensure_database(url)
    db = Database(url)
    upgrade(db)
    db.dispose()
    yield url
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "conveyor_test_{session_token}" WITH (FORCE)'))
    admin.dispose()


_namespace_counter = itertools.count()


@pytest.fixture
def namespace(session_token: str) -> Iterator[str]:
    """A namespace for this test alone; its RabbitMQ queues are deleted afterwards."""
    ns = f"t{session_token}-{next(_namespace_counter)}"
    yield ns
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        for name in queue_names(ns):
            channel.queue_delete(name)
    finally:
        connection.close()


@pytest.fixture
def settings(database_url: str, namespace: str) -> Settings:
    return Settings(broker_url=AMQP_URL, database_url=database_url, namespace=namespace)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    """This test's pool on the session's database (the client shares it)."""
    database = Database(settings.database_url)
    yield database
    database.dispose()


@pytest.fixture
def job_store(db: Database) -> JobStore:
    """The job rows as the store reads and writes them (the client keeps its own store private)."""
    return JobStore(db)


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[Client]:
    with Client(settings, db=db) as c:
        yield c


@pytest.fixture
def service_env(settings: Settings) -> dict[str, str]:
    """The environment a `conveyor` subprocess of this test runs with."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(
        CONVEYOR_BROKER_URL=settings.broker_url,
        CONVEYOR_DATABASE_URL=settings.database_url,
        CONVEYOR_NAMESPACE=settings.namespace,
    )
    return env


@pytest.fixture
def start_worker(service_env: dict[str, str]) -> Iterator[WorkerProcess.Factory]:
    """Start `conveyor worker` replicas; all are stopped when the test ends."""
    started: list[WorkerProcess] = []

    def factory(*args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess.start({**service_env, **(env or {})}, *args)
        started.append(worker)
        return worker

    yield factory
    for worker in started:
        worker.terminate()


@pytest.fixture
def crash_kind() -> Iterator[None]:
    """The `crash` kind on this (producer) side too, for this test only: other tests see the
    shipped kinds alone."""
    from tests import poison  # importing it registers the kind, as `--include` does in a worker

    register(poison.KIND)
    yield
    KINDS.pop(poison.KIND.name, None)
    ACTOR_KINDS.pop(poison.KIND.actor_name, None)


# TLS to every service


@pytest.fixture(scope="session")
def tls_services() -> Iterator[TlsServices]:
    """PostgreSQL, RabbitMQ and Redis over TLS (tests/tls.py), started once and shared by the
    xdist workers; mark the tests using them with ``tests.tls.tls_group``."""
    with running_tls_services() as services:
        yield services


@pytest.fixture(scope="session")
def tls_database_url(tls_services: TlsServices, session_token: str) -> str:
    """A migrated database of this session on the TLS cluster, reached with ``sslmode=verify-full``."""
    url = tls_services.postgres.url(f"conveyor_tls_{session_token}", tls_services.certs.ca)
    ensure_database(url)
    db = Database(url)
    upgrade(db)
    db.dispose()
    return url


@pytest.fixture
def tls_settings(tls_services: TlsServices, tls_database_url: str, namespace: str) -> Settings:
    """Settings with every service over verified TLS (SMTP stays a test's own choice)."""
    ca = tls_services.certs.ca
    return Settings(
        broker_url=tls_services.rabbitmq.url(ca),
        database_url=tls_database_url,
        redis_url=tls_services.redis.url(ca),
        namespace=namespace,
    )
