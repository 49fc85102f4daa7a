"""JSON log lines: the fields, the running job's context, secrets masked, and every other line
on stderr (prints, warnings, uncaught exceptions) turned into JSON as well."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import pytest

from jobs.context import JobContext, set_current_job
from jobs.logs import JobContextFilter, JsonFormatter, MaskSecretsFilter, configure_logging
from tests.helpers import ROOT, secret


def _formatted(record: logging.LogRecord) -> dict[str, object]:
    for check in (MaskSecretsFilter(), JobContextFilter()):
        assert check.filter(record)
    document: dict[str, object] = json.loads(JsonFormatter().format(record))
    return document


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("conveyor.test", logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_a_record_outside_a_job_has_the_four_fields_and_a_utc_time() -> None:
    document = _formatted(_record("%d jobs waiting", 3))

    assert document["level"] == "WARNING"
    assert document["logger"] == "conveyor.test"
    assert document["message"] == "3 jobs waiting"
    assert isinstance(document["time"], str)
    assert document["time"].endswith("Z")
    moment = datetime.fromisoformat(document["time"])
    assert moment.tzinfo == UTC
    assert abs((datetime.now(UTC) - moment).total_seconds()) < 60
    assert not {"job_id", "kind", "attempt", "trace_id", "traceback"} & document.keys()


def test_a_record_in_a_job_carries_its_id_kind_attempt_and_trace_id() -> None:
    set_current_job(JobContext(job_id="j-1", kind="email", attempt=2, trace_id="ab" * 16))
    try:
        document = _formatted(_record("sending"))
    finally:
        set_current_job(None)

    assert (document["job_id"], document["kind"], document["attempt"]) == ("j-1", "email", 2)
    assert document["trace_id"] == "ab" * 16


def test_values_passed_as_extras_win_over_the_threads_job_and_the_attempt_is_an_integer() -> None:
    set_current_job(JobContext(job_id="running", kind="noop", attempt=1))
    try:
        document = _formatted(_record("about another job", job_id="other", attempt="3"))
    finally:
        set_current_job(None)

    assert (document["job_id"], document["kind"], document["attempt"]) == ("other", "noop", 3)
    assert "trace_id" not in document


def test_secrets_are_masked_and_a_traceback_is_one_string_field() -> None:
    password = secret("json log")
    try:
        raise RuntimeError(f"cannot reach amqp://app:{password}@mq.example/")
    except RuntimeError:
        record = logging.LogRecord(
            "conveyor.test",
            logging.ERROR,
            __file__,
            1,
            "url %s",
            (f"redis://:{password}@r/0",),
            sys.exc_info(),
        )

    document = _formatted(record)

    assert password not in json.dumps(document)
    assert document["message"] == "url redis://:***@r/0"
    assert isinstance(document["traceback"], str)
    assert "RuntimeError: cannot reach amqp://app:***@mq.example/" in document["traceback"]


def test_configure_logging_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="text, json"):
        configure_logging(logging.INFO, "xml")


def test_in_json_mode_every_line_on_stderr_is_json_prints_warnings_and_uncaught_errors_alike() -> None:
    program = textwrap.dedent(
        """
        import logging, sys, threading, warnings
        from jobs.logs import configure_logging
        configure_logging(logging.INFO, "json")
        logging.getLogger("app").info("hello %s", "there")
        print("a banner\\nover two lines", file=sys.stderr)
        warnings.warn("old API", DeprecationWarning)
        thread = threading.Thread(target=lambda: 1 / 0, name="doomed")
        thread.start(); thread.join()
        raise SystemExit("exiting with a message")
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", program],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )

    lines = done.stderr.splitlines()
    documents = [json.loads(line) for line in lines]  # every line parses
    messages = [d["message"] for d in documents]
    assert "hello there" in messages
    assert "a banner" in messages
    assert "over two lines" in messages
    assert any("DeprecationWarning: old API" in m for m in messages)
    (uncaught,) = [d for d in documents if d["message"] == "uncaught exception in thread doomed"]
    assert uncaught["level"] == "CRITICAL"
    assert "ZeroDivisionError" in uncaught["traceback"]
    assert "exiting with a message" in messages
    assert done.returncode == 1
