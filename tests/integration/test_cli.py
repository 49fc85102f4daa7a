"""The `conveyor` command as an admin uses it, against the real services."""

from __future__ import annotations

import json
import secrets

import pytest
from sqlalchemy import create_engine, text

from jobs.store.migrate import head_revision
from producers import Client
from tests.helpers import WorkerProcess, run_cli, secret

pytestmark = pytest.mark.integration


def test_enqueue_prints_the_job_id_and_jobs_show_gives_its_history(
    service_env: dict[str, str], client: Client, start_worker: WorkerProcess.Factory
) -> None:
    start_worker()
    enqueued = run_cli("enqueue", "noop", "--sleep", "0.01", "--wait", "20", env=service_env)
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = enqueued.stdout.strip()
    assert client.get(job_id).status == "succeeded"

    shown = run_cli("jobs", "show", job_id, "--json", env=service_env)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["id"] == job_id
    assert data["status"] == "succeeded"
    assert [a["outcome"] for a in data["history"]] == ["succeeded"]

    table = run_cli("jobs", "show", job_id, env=service_env)
    assert job_id in table.stdout
    assert "attempts" in table.stdout


def test_jobs_list_filters_by_status_and_kind(service_env: dict[str, str], client: Client) -> None:
    queued = client.enqueue("noop")

    listed = run_cli("jobs", "list", "--status", "queued", "--kind", "noop", "--json", env=service_env)

    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert queued.id in [row["id"] for row in rows]
    assert {row["status"] for row in rows} == {"queued"}
    none = run_cli("jobs", "list", "--status", "failed", "--json", env=service_env)
    assert queued.id not in none.stdout


def test_ping_reports_the_round_trip_through_a_worker(
    service_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    start_worker()

    ping = run_cli("ping", "--json", env=service_env)

    assert ping.returncode == 0, ping.stderr
    data = json.loads(ping.stdout)
    assert data["round_trip_ms"] > 0
    assert data["worker"].count(":") == 2


def test_ping_without_a_worker_fails_with_exit_code_1(service_env: dict[str, str]) -> None:
    ping = run_cli("ping", "--timeout", "0.5", env=service_env)

    assert ping.returncode == 1
    assert "no worker finished" in ping.stderr


def test_jobs_show_of_an_unknown_id_is_a_clear_failure(service_env: dict[str, str]) -> None:
    shown = run_cli("jobs", "show", "not-a-uuid", env=service_env)

    assert shown.returncode == 1
    assert shown.stderr.strip() == "conveyor: error: no job 'not-a-uuid': a job id is a UUID"


def test_a_bad_payload_from_the_shell_is_bad_usage(service_env: dict[str, str]) -> None:
    result = run_cli("enqueue", "noop", "--sleep", "99", env=service_env)

    assert result.returncode == 2
    assert "99" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_setting_is_a_clear_error(service_env: dict[str, str]) -> None:
    env = {**service_env, "CONVEYOR_BROKR_URL": "amqp://x"}

    result = run_cli("jobs", "list", env=env)

    assert result.returncode == 2
    assert "unknown setting CONVEYOR_BROKR_URL (did you mean CONVEYOR_BROKER_URL?)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_malformed_url_is_a_clear_error_with_the_password_masked(service_env: dict[str, str]) -> None:
    password = secret("mysql")
    env = {**service_env, "CONVEYOR_DATABASE_URL": f"mysql://root:{password}@127.0.0.1/x"}

    result = run_cli("jobs", "list", env=env)

    assert result.returncode == 2
    assert "CONVEYOR_DATABASE_URL=mysql://root:***@127.0.0.1/x must start with one of" in result.stderr
    assert password not in result.stderr + result.stdout


def test_unreachable_rabbitmq_exits_3_naming_it_without_the_password(service_env: dict[str, str]) -> None:
    password = secret("broker")
    result = run_cli(
        "--broker-url", f"amqp://guest:{password}@127.0.0.1:1/%2F", "enqueue", "noop", env=service_env
    )

    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("conveyor: error: RabbitMQ is unreachable at amqp://guest:***@127.0.0.1:1/%2F")
    assert password not in result.stderr + result.stdout


def test_unreachable_postgresql_exits_3_naming_it_without_the_password(service_env: dict[str, str]) -> None:
    password = secret("postgres")
    url = f"postgresql+psycopg://postgres:{password}@127.0.0.1:1/conveyor"

    for args in (["jobs", "list"], ["enqueue", "noop"], ["db", "upgrade"], ["worker"]):
        result = run_cli("--database-url", url, *args, env=service_env)

        assert result.returncode == 3, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert (
            "PostgreSQL is unreachable at postgresql+psycopg://postgres:***@127.0.0.1:1/conveyor" in lines[0]
        )
        assert password not in result.stderr + result.stdout


def test_db_upgrade_creates_a_missing_database_then_migrates_it(service_env: dict[str, str]) -> None:
    name = f"conveyor_cli_{secrets.token_hex(4)}"
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        first = run_cli("--database-url", url, "db", "upgrade", env=service_env)
        assert first.returncode == 0, first.stderr
        assert f"created database {url}" in first.stdout
        assert f"schema at {head_revision()} (was empty)" in first.stdout

        again = run_cli("--database-url", url, "db", "upgrade", env=service_env)
        assert again.returncode == 0
        assert again.stdout.strip() == f"schema up to date at {head_revision()}"
    finally:
        admin = create_engine(
            "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_help_shows_each_option_with_its_environment_variable() -> None:
    result = run_cli("--help")

    assert result.returncode == 0
    for variable in (
        "CONVEYOR_BROKER_URL",
        "CONVEYOR_DATABASE_URL",
        "CONVEYOR_REDIS_URL",
        "CONVEYOR_NAMESPACE",
    ):
        assert variable in result.stdout
    assert "Examples:" in result.stdout


def test_enqueue_email_takes_context_json_and_vars(service_env: dict[str, str], client: Client) -> None:
    result = run_cli(
        "enqueue",
        "email",
        "--to",
        "ada@example.com",
        "--template",
        "password_reset",
        "--context",
        '{"name": "Ada"}',
        "--var",
        "reset_url=https://example.com/r",
        "--json",
        env=service_env,
    )

    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["kind"] == "email"
    assert row["queue"].endswith(".email")
    assert row["payload"]["context"] == {"name": "Ada", "reset_url": "https://example.com/r"}
    bad = run_cli(
        "enqueue",
        "email",
        "--to",
        "ada@example.com",
        "--template",
        "welcome",
        "--var",
        "oops",
        env=service_env,
    )
    assert bad.returncode == 2
    assert "KEY=VALUE" in bad.stderr


def test_artifacts_list_and_get_from_the_shell(service_env: dict[str, str], client: Client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    artifact = client.put_artifact(b"hello, artifact", name="hello.txt")

    listed = run_cli("artifacts", "list", "--json", "--limit", "500", env=service_env)
    got = run_cli("artifacts", "get", artifact, "-o", str(tmp_path / "out.txt"), env=service_env)
    missing = run_cli("artifacts", "get", "9d1c1a0a-1111-4111-8111-111111111111", env=service_env)

    assert listed.returncode == 0, listed.stderr
    assert artifact in [row["id"] for row in json.loads(listed.stdout)]
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out.txt").read_bytes() == b"hello, artifact"
    assert missing.returncode == 1
    assert "no artifact" in missing.stderr


def test_bench_measures_the_running_stack(
    service_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    start_worker("--processes", "1", "--threads", "4")

    result = run_cli("bench", "--jobs", "60", "--json", env=service_env, timeout=120)

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["jobs"] == 60
    assert data["failed"] == 0
    assert data["enqueue_per_second"] > 0
    assert data["processed_per_second"] > 0
    assert 0 < data["latency_p50_ms"] <= data["latency_p99_ms"]


def test_bench_without_a_worker_says_so(service_env: dict[str, str]) -> None:
    result = run_cli("bench", "--jobs", "5", env=service_env, timeout=60)

    assert result.returncode == 1
    assert "is `conveyor worker` running?" in result.stderr
