"""Report jobs against real PostgreSQL, RabbitMQ, Redis (and SMTP for report → email)."""

from __future__ import annotations

import csv
import hashlib
import io
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlalchemy import text

from jobs.errors import JobFailed
from jobs.settings import Settings
from jobs.store import Database, JobStore
from producers import Client
from tests.helpers import WorkerProcess
from tests.smtp import SmtpServer

pytestmark = pytest.mark.integration
KINDS = ("email", "image", "noop")
STATUSES = ("succeeded", "failed", "succeeded", "retrying")


def seed(db: Database, start: datetime, count: int) -> list[tuple[str, str, str]]:
    """``count`` finished-looking jobs (with one attempt each) created from ``start`` on, a minute apart."""
    rows = []
    with db.engine.begin() as connection:
        for i in range(count):
            job_id, kind, status = str(uuid.uuid4()), KINDS[i % 3], STATUSES[i % 4]
            created = start + timedelta(minutes=i)
            started, finished = created + timedelta(seconds=1 + i % 5), created + timedelta(seconds=3 + i % 7)
            connection.execute(
                text(
                    "INSERT INTO jobs (id, kind, queue, status, payload, attempts, created_at, "
                    "started_at, finished_at, error) VALUES (:id, :kind, 'q', :status, '{}', :attempts, "
                    ":created, :started, :finished, :error)"
                ),
                {
                    "id": job_id,
                    "kind": kind,
                    "status": status,
                    "attempts": 1 + i % 2,
                    "created": created,
                    "started": started,
                    "finished": finished,
                    "error": "Boom: bad" if status == "failed" else None,
                },
            )
            connection.execute(
                text(
                    "INSERT INTO job_attempts (job_id, attempt, worker, host, pid, started_at, "
                    "finished_at, outcome) VALUES (:id, 1, 'w', 'h', 1, :started, :finished, 'succeeded')"
                ),
                {"id": job_id, "started": started, "finished": finished},
            )
            rows.append((job_id, kind, status))
    return rows


@pytest.fixture
def window(database_url: str) -> Iterator[tuple[datetime, list[tuple[str, str, str]]]]:
    """40 jobs in a window of their own, far from every other test's rows."""
    start = datetime(2031, 1, 1, tzinfo=UTC) + timedelta(days=uuid.uuid4().int % 10_000)
    db = Database(database_url)
    yield start, seed(db, start, 40)
    db.dispose()


def params(start: datetime, hours: int = 1) -> dict[str, str]:
    return {"since": start.isoformat(), "until": (start + timedelta(hours=hours)).isoformat()}


def test_jobs_summary_matches_the_ground_truth_in_every_format(
    client: Client, start_worker: WorkerProcess.Factory, window: tuple[datetime, list[tuple[str, str, str]]]
) -> None:
    start, seeded = window
    start_worker()
    job = client.generate_report("jobs_summary", params=params(start), formats=["html", "csv", "pdf"])

    result = job.wait(timeout=60)

    assert result["rows"] == 40
    assert result["cache"] == "miss"
    truth = Counter(status for _, _, status in seeded)
    assert result["summary"]["totals"]["succeeded"] == truth["succeeded"] == 20
    assert result["summary"]["totals"]["failed"] == truth["failed"] == 10
    files = {a["name"].rsplit(".", 1)[1]: a for a in result["artifacts"]}
    for artifact in files.values():
        data = client.get_artifact(artifact["id"])
        assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
        assert len(data) == artifact["size"]
    rows = list(csv.DictReader(io.StringIO(client.get_artifact(files["csv"]["id"]).decode())))
    assert len(rows) == 40
    assert {r["id"] for r in rows} == {job_id for job_id, _, _ in seeded}
    assert Counter((r["kind"], r["status"]) for r in rows) == Counter((k, s) for _, k, s in seeded)
    html = client.get_artifact(files["html"]["id"]).decode()
    assert "<svg" in html
    assert "Jobs summary" in html
    assert "Boom: bad" in html
    pdf = PdfReader(io.BytesIO(client.get_artifact(files["pdf"]["id"])))
    pdf_text = " ".join(page.extract_text() for page in pdf.pages)
    assert "Jobs summary" in pdf_text
    assert "40" in pdf_text
    assert "succeeded" in pdf_text
    assert client.get(job.id).progress == 100


def test_a_second_identical_request_is_a_cache_hit_until_the_ttl_passes(
    client: Client, start_worker: WorkerProcess.Factory, window: tuple[datetime, list[tuple[str, str, str]]]
) -> None:
    start, _ = window
    start_worker(env={"CONVEYOR_REPORT_CACHE_TTL": "2"})
    request = {"params": params(start), "formats": ["csv"]}

    first = client.generate_report("jobs_summary", **request).wait(timeout=60)
    second = client.generate_report("jobs_summary", **request).wait(timeout=60)
    time.sleep(2.5)
    third = client.generate_report("jobs_summary", **request).wait(timeout=60)

    assert (first["cache"], second["cache"], third["cache"]) == ("miss", "hit", "miss")
    assert second["artifacts"] == first["artifacts"]
    assert third["artifacts"] != first["artifacts"]


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


def test_a_report_is_emailed_as_attachments_by_a_linked_follow_up_job(
    client: Client,
    job_store: JobStore,
    smtp: SmtpServer,
    start_worker: WorkerProcess.Factory,
    window: tuple[datetime, list[tuple[str, str, str]]],
) -> None:
    start, _ = window
    start_worker(env={"CONVEYOR_SMTP_URL": smtp.url})
    job = client.generate_report(
        "jobs_summary", params=params(start), formats=["csv", "pdf"], email_to=["boss@example.com"]
    )
    result = job.wait(timeout=60)
    email = client.get(result["email_job"])
    email.wait(timeout=30)

    assert email.info.parent_id == job.id
    assert [c.id for c in job_store.children(job.id)] == [email.id]
    (received,) = smtp.received
    names = sorted(part.get_filename() for part in received.message.iter_attachments())
    assert names == sorted(a["name"] for a in result["artifacts"])
    assert received.message["Subject"].startswith("Your report is ready: Jobs summary")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"params": {"since": "yesterday"}}, "since='yesterday' is not a date"),
        ({"params": {"since": "2026-11-02", "until": "2026-11-01"}}, "must be after since"),
        ({"params": {"sinse": "2026-11-01"}}, "unknown sinse"),
        ({"formats": ["docx"]}, "formats must be"),
        ({"email_to": ["not an address"]}, "not a valid address"),
    ],
)
def test_bad_report_requests_are_value_errors(
    client: Client, arguments: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        client.generate_report("jobs_summary", **arguments)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown report 'sales'"):
        client.generate_report("sales")


def test_a_broken_report_template_fails_the_job_permanently(
    client: Client, start_worker: WorkerProcess.Factory, tmp_path: Path
) -> None:
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "jobs_summary.html").write_text("{{ summary.nothing_here.at_all }}")
    start_worker(env={"CONVEYOR_TEMPLATES_DIR": str(tmp_path)})

    job = client.generate_report("jobs_summary", formats=["html"])

    with pytest.raises(JobFailed, match="template error"):
        job.wait(timeout=60)
    assert job.attempts == 1


def test_a_200k_row_csv_streams_in_bounded_worker_memory(
    client: Client, db: Database, settings: Settings, start_worker: WorkerProcess.Factory, tmp_path: Path
) -> None:
    start = datetime(2040, 1, 1, tzinfo=UTC) + timedelta(days=uuid.uuid4().int % 10_000)
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (id, kind, queue, status, payload, attempts, created_at, finished_at) "
                "SELECT gen_random_uuid(), 'noop', 'bulk', 'succeeded', '{}', 1, "
                ":start + make_interval(secs => n), :start + make_interval(secs => n + 1) "
                "FROM generate_series(1, 200000) AS n"
            ),
            {"start": start},
        )
    worker = start_worker(
        "--processes", "1", "--threads", "1", env={"CONVEYOR_ARTIFACT_URL": f"file://{tmp_path}/artifacts"}
    )
    child = _worker_child_pid(worker)
    client.enqueue("noop").wait(timeout=30)  # warm the process up before the baseline
    baseline = _peak_rss_kib(child)

    result = client.generate_report("jobs_summary", params=params(start, hours=60), formats=["csv"]).wait(
        timeout=120
    )

    growth_mib = (_peak_rss_kib(child) - baseline) / 1024
    (artifact,) = result["artifacts"]
    assert result["rows"] == 200_000
    assert artifact["size"] > 20 * 2**20  # the CSV is far larger than the memory it may take
    assert growth_mib < 40, f"peak RSS grew by {growth_mib:.1f} MiB"


def _worker_child_pid(worker: WorkerProcess) -> int:
    line = next(line for line in worker.lines if " ready: " in line)
    return int(line.split()[2])


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")
