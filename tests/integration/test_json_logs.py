"""`CONVEYOR_LOG_FORMAT=json`: every line a real `conveyor worker` writes parses as one JSON
object (banners, the supervisor's and the processes' lines, start-up failures alike), and a
job's lines carry its id, kind and attempt."""

from __future__ import annotations

import importlib
import json
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from jobs.kinds import KINDS, register
from producers import Client
from tests.helpers import WorkerProcess, eventually, run_cli

pytestmark = pytest.mark.integration

JSON_LOGS = {"CONVEYOR_LOG_FORMAT": "json"}
LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


@pytest.fixture
def chatty_kind() -> Iterator[None]:
    """The `chatty` kind on this (producer) side, for this test only."""
    # Imported here, not at the top: importing tests.traced registers the kind (what a worker's
    # --include needs), and a module-level import would leave it registered for every test of
    # this process.
    traced = importlib.import_module("tests.traced")
    register(traced.KIND)
    yield
    KINDS.pop(traced.KIND.name, None)


def _documents(lines: list[str]) -> list[dict[str, Any]]:
    """Every line as a JSON object with the four fields of every record, checked."""
    documents = []
    for line in lines:
        document = json.loads(line)  # fails the test on any line that is not JSON
        assert isinstance(document, dict), line
        assert document["level"] in LEVELS, line
        assert isinstance(document["logger"], str), line
        assert isinstance(document["message"], str), line
        assert document["time"].endswith("Z"), line
        assert datetime.fromisoformat(document["time"]).tzinfo == UTC, line
        if "attempt" in document:
            assert type(document["attempt"]) is int, line
        documents.append(document)
    return documents


def _outcomes(documents: list[dict[str, Any]], job_id: str) -> list[tuple[int, str, str]]:
    """(attempt, level, outcome) of each attempt's outcome line of ``job_id``."""
    found = []
    for d in documents:
        if d.get("job_id") == job_id and d["logger"] == "conveyor.lifecycle":
            outcome = d["message"].split(": ")[1].split(" after ")[0]
            found.append((d["attempt"], d["level"], outcome))
    return found


def test_a_json_worker_writes_only_json_lines_and_each_jobs_lines_carry_its_fields(
    start_worker: WorkerProcess.Factory, client: Client, chatty_kind: None, service_env: dict[str, str]
) -> None:
    worker = start_worker("--processes", "2", "--threads", "2", "--include", "tests.traced", env=JSON_LOGS)
    chatty = client.enqueue("chatty")
    retried = client.enqueue("noop", fail_attempts=1, min_backoff=0.05, max_backoff=0.1)
    failed = client.enqueue("noop", permanent=True)
    broken = client.enqueue("chatty", fail=True)
    for job in (chatty, retried):
        job.wait(timeout=30)
    for job in (failed, broken):
        eventually(lambda job=job: job.refresh().status.is_final)
    eventually(lambda: worker.count(failed.id) and worker.count(broken.id))
    worker.terminate()

    documents = _documents(worker.lines)

    assert _outcomes(documents, chatty.id) == [(1, "INFO", "succeeded")]
    assert _outcomes(documents, retried.id) == [(1, "WARNING", "retrying"), (2, "INFO", "succeeded")]
    assert _outcomes(documents, failed.id) == [(1, "WARNING", "failed")]
    assert _outcomes(documents, broken.id) == [(1, "WARNING", "failed")]
    # A line the job's own code logged carries the job's fields too.
    (own,) = [d for d in documents if d["logger"] == "tests.chatty" and d.get("job_id") == chatty.id]
    assert (own["kind"], own["attempt"], own["message"]) == ("chatty", 1, "chatty job at work")
    for d in documents:
        if d.get("job_id") in (retried.id, failed.id):
            assert d["kind"] == "noop"
        assert "trace_id" not in d  # nothing here carried trace context
    # The banner, the supervisor's and each process's start-up lines are records too; the
    # banner's URLs keep their passwords masked.
    messages = [d["message"] for d in documents]
    (banner,) = [d for d in documents if d["message"].startswith("conveyor worker: 2 process(es)")]
    assert banner["level"] == "INFO"
    assert "guest:***@" in banner["message"]
    assert any("starting 2 worker processes" in m for m in messages)
    assert sum(" ready: " in m for m in messages) == 2
    assert any(m == "all worker processes stopped" for m in messages)


def test_a_supervisor_replacing_a_killed_process_logs_json(start_worker: WorkerProcess.Factory) -> None:
    worker = start_worker("--processes", "1", "--threads", "1", env=JSON_LOGS)
    (ready,) = [d for d in _documents(worker.lines) if " ready: " in d["message"]]

    os.kill(ready["pid"], signal.SIGKILL)
    worker.wait_ready(2)
    worker.terminate()

    documents = _documents(worker.lines)
    (died,) = [d for d in documents if "died" in d["message"]]
    assert died["logger"] == "conveyor.supervisor"
    assert died["level"] == "ERROR"
    assert f"worker process {ready['pid']} died (exit code -9)" in died["message"]
    assert len({d["pid"] for d in documents if " ready: " in d["message"]}) == 2


def test_a_worker_that_cannot_start_says_why_in_json(service_env: dict[str, str]) -> None:
    env = {**service_env, **JSON_LOGS, "CONVEYOR_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/%2F"}

    done = run_cli("worker", "--processes", "1", env=env)

    assert done.returncode == 3, done.stderr
    (error,) = _documents(done.stderr.splitlines())
    assert error["level"] == "ERROR"
    assert error["message"].startswith("conveyor: error: ")
    assert "guest:guest@" not in done.stderr
