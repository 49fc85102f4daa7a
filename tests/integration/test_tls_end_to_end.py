"""A worker and a client with every service over verified TLS (PostgreSQL, RabbitMQ,
Redis, and SMTP with a password) run an email job to success."""

from __future__ import annotations

import json
import os
import ssl

import pytest

from jobs.admin.operations import Operations
from jobs.settings import Settings
from jobs.store import Database
from producers import Client
from tests.helpers import WorkerProcess, eventually, run_cli
from tests.smtp import SmtpServer
from tests.tls import TlsServices, tls_group

pytestmark = [pytest.mark.integration, tls_group]

SMTP_PASSWORD = "tls-e2e-smtp-secret"


def conveyor_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(
        CONVEYOR_BROKER_URL=settings.broker_url,
        CONVEYOR_DATABASE_URL=settings.database_url,
        CONVEYOR_REDIS_URL=settings.redis_url,
        CONVEYOR_NAMESPACE=settings.namespace,
        **extra,
    )
    return env


def test_an_email_job_runs_to_success_with_every_service_over_tls(
    tls_services: TlsServices, tls_settings: Settings
) -> None:
    # SMTP with STARTTLS offered, not required: Conveyor upgrades of its own accord before it
    # logs in (SMTPS is tested against the transport in test_tls_smtp.py, as the rest of SMTP).
    certs = tls_services.certs
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    smtp = SmtpServer(tls_context=context, require_starttls=False, credentials=("mailer", SMTP_PASSWORD))
    smtp.start()
    smtp_url = f"smtp://mailer:{SMTP_PASSWORD}@localhost:{smtp.port}?cafile={certs.ca}"
    env = conveyor_env(tls_settings, CONVEYOR_SMTP_URL=smtp_url)
    worker = None
    db = Database(tls_settings.database_url)
    try:
        assert run_cli("db", "upgrade", env=env).returncode == 0
        worker = WorkerProcess.start(env, "--processes", "1", "--threads", "2")
        with Client(tls_settings, db=db) as client:
            result = client.send_email("ada@example.com", "welcome", {"name": "Ada"}).wait(timeout=30)

        assert result["accepted"] == ["ada@example.com"]
        assert [(r.recipients, r.tls) for r in smtp.received] == [(["ada@example.com"], True)]
        assert smtp.handler.logins == [True]
        # The worker's heartbeat went to Redis over TLS: `conveyor workers` reads it there.
        operations = Operations(tls_settings, db)
        try:
            view = eventually(lambda: operations.workers() if operations.workers().replicas else None)
        finally:
            operations.close()
        assert view.source == "redis"
        listed = run_cli("workers", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["source"] == "redis"
        assert SMTP_PASSWORD not in "\n".join(worker.lines)
    finally:
        if worker is not None:
            worker.terminate()
        db.dispose()
        smtp.stop()
