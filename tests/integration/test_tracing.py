"""W3C trace context from a producer's span, through RabbitMQ, to a real worker's attempt: its
span, its row, `conveyor jobs show` and its JSON log lines; and a worker without OpenTelemetry."""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

from jobs.kinds import KINDS, register
from jobs.settings import Settings
from jobs.store import Database
from producers import Client
from tests import spans
from tests.helpers import WorkerProcess, eventually, run_cli

pytestmark = pytest.mark.integration

SIGNING_KEY = "t" * 32 + "-tracing"
HEADER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def chatty_kind() -> Iterator[None]:
    # Imported here, not at the top: importing tests.traced registers the kind (what a worker's
    # --include needs), and a module-level import would leave it registered for every test of
    # this process.
    traced = importlib.import_module("tests.traced")
    register(traced.KIND)
    yield
    KINDS.pop(traced.KIND.name, None)


def _spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _job_lines(worker: WorkerProcess, job_id: str) -> list[dict[str, Any]]:
    documents = [json.loads(line) for line in worker.lines]
    return [d for d in documents if d.get("job_id") == job_id]


def test_an_attempt_runs_in_the_producers_trace_and_its_row_show_and_log_lines_keep_the_trace_id(
    start_worker: WorkerProcess.Factory,
    settings: Settings,
    db: Database,
    service_env: dict[str, str],
    chatty_kind: None,
    tmp_path: Path,
) -> None:
    span_file = tmp_path / "spans.jsonl"
    # Signed messages: the trace context is signed with the rest, and verifies on the worker.
    env = {
        "CONVEYOR_LOG_FORMAT": "json",
        "CONVEYOR_SIGNING_KEY": SIGNING_KEY,
        "TEST_SPAN_FILE": str(span_file),
    }
    worker = start_worker("--processes", "2", "--threads", "2", "--include", "tests.traced", env=env)
    producer_spans = spans.memory_spans()

    with Client(dataclasses.replace(settings, signing_key=SIGNING_KEY), db=db) as client:
        with trace.get_tracer("test").start_as_current_span("web request") as request:
            job = client.enqueue("chatty")
        job.wait(timeout=30)
    producer = request.get_span_context()
    trace_id, parent_id = f"{producer.trace_id:032x}", f"{producer.span_id:016x}"

    (web,) = producer_spans.get_finished_spans()
    assert web.name == "web request"
    (run,) = eventually(
        lambda: [s for s in _spans(span_file) if s["attributes"]["conveyor.job.id"] == job.id]
    )
    assert run["name"] == "chatty run"
    assert (run["trace_id"], run["parent_span_id"]) == (trace_id, parent_id)
    assert run["attributes"]["conveyor.job.attempt"] == 1
    assert [a.trace_id for a in job.history()] == [trace_id]

    shown = run_cli("jobs", "show", job.id, env=service_env)
    assert shown.returncode == 0, shown.stderr
    assert f"trace id: {trace_id} (attempt 1)" in shown.stdout
    as_json = run_cli("jobs", "show", job.id, "--json", env=service_env)
    assert [a["trace_id"] for a in json.loads(as_json.stdout)["history"]] == [trace_id]

    lines = eventually(lambda: [d for d in _job_lines(worker, job.id) if d["logger"] == "conveyor.lifecycle"])
    own = [d for d in _job_lines(worker, job.id) if d["logger"] == "tests.chatty"]
    assert {d["trace_id"] for d in lines + own} == {trace_id}
    assert len(own) == 1


def test_a_worker_without_opentelemetry_runs_the_job_and_keeps_the_given_trace_id(
    start_worker: WorkerProcess.Factory, client: Client, service_env: dict[str, str], tmp_path: Path
) -> None:
    # `opentelemetry` shadowed by a package that cannot be imported (and says it was tried).
    blocked = tmp_path / "blocked" / "opentelemetry"
    blocked.mkdir(parents=True)
    tried = tmp_path / "tried"
    (blocked / "__init__.py").write_text(
        f"open({str(tried)!r}, 'a').close()\nraise ImportError('OpenTelemetry is not installed here')\n"
    )
    env = {"CONVEYOR_LOG_FORMAT": "json", "PYTHONPATH": str(blocked.parent)}
    worker = start_worker("--processes", "1", "--threads", "2", env=env)

    job = client.enqueue("noop", traceparent=HEADER)
    malformed = client.enqueue("noop", traceparent="00-not-a-trace")  # dropped by the producer

    assert job.wait(timeout=30) is not None
    assert malformed.wait(timeout=30) is not None
    assert tried.exists()
    assert [a.trace_id for a in job.history()] == ["0af7651916cd43dd8448eb211c80319c"]
    assert [a.trace_id for a in malformed.history()] == [None]
    (outcome,) = eventually(lambda: _job_lines(worker, job.id))
    assert outcome["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    shown = run_cli("jobs", "show", malformed.id, env=service_env)
    assert "trace id" not in shown.stdout


def test_a_stopping_worker_exports_the_spans_its_batching_processor_still_holds(
    start_worker: WorkerProcess.Factory, client: Client, tmp_path: Path
) -> None:
    span_file = tmp_path / "spans.jsonl"
    # A module that sets up the SDK and registers no kind; batches sent only every minute.
    env = {"TEST_BATCH_SPAN_FILE": str(span_file), "OTEL_BSP_SCHEDULE_DELAY": "60000"}
    worker = start_worker("--processes", "2", "--threads", "2", "--include", "tests.traced_batch", env=env)
    jobs = [client.enqueue("noop", traceparent=HEADER) for _ in range(6)]
    for job in jobs:
        job.wait(timeout=30)
    assert _spans(span_file) == []  # still in the processor's batch

    worker.terminate()

    spans = _spans(span_file)
    assert sorted(s["attributes"]["conveyor.job.id"] for s in spans) == sorted(job.id for job in jobs)
    assert {(s["trace_id"], s["parent_span_id"]) for s in spans} == {
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    }
