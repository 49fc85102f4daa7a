"""Every number and duration the CLI takes: a bad value is a clear error with exit 2, never a
traceback (`--delay inf`, `99999999999d`, NaN, huge or negative values)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cli import main
from tests.helpers import run_cli

pytestmark = pytest.mark.integration

_JOB = "6d9866cf-15f9-4a92-8991-49fb29f5a7ef"  # no such job

CASES = [
    (["enqueue", "noop", "--delay", "inf"], "--delay"),
    (["enqueue", "noop", "--delay", "nan"], "--delay"),
    (["enqueue", "noop", "--delay", "1e400"], "--delay"),
    (["enqueue", "noop", "--delay", "-1"], "--delay"),
    (["enqueue", "noop", "--delay", "99999999999"], "--delay"),
    (["enqueue", "noop", "--priority", "99999999999999999999"], "priority"),
    (["enqueue", "noop", "--priority", "-5"], "priority"),
    (["enqueue", "noop", "--max-retries", "2147483648"], "max_retries"),
    (["enqueue", "noop", "--min-backoff", "inf"], "--min-backoff"),
    (["enqueue", "noop", "--max-backoff", "nan"], "--max-backoff"),
    (["enqueue", "noop", "--max-backoff", "1e12"], "--max-backoff"),
    (["enqueue", "noop", "--wait", "inf"], "--wait"),
    (["enqueue", "noop", "--wait", "nan"], "--wait"),
    (["enqueue", "noop", "--wait", "-1"], "--wait"),
    (["enqueue", "noop", "--sleep", "nan"], "--sleep"),
    (["enqueue", "email", "--to", "a@example.com", "--template", "welcome", "--delay", "inf"], "--delay"),
    (
        [
            "enqueue",
            "email",
            "--to",
            "a@example.com",
            "--template",
            "welcome",
            "--context",
            '{"name": "\\u0000"}',
        ],
        "payload.context.name: contains a NUL character",
    ),
    (["jobs", "list", "--limit", "-1"], "--limit"),
    (["jobs", "list", "--page", "99999999999999999999"], "--page"),
    (["jobs", "list", "--since", "99999999999d"], "--since"),
    (["jobs", "list", "--since", "999999999d"], "--since"),
    (["jobs", "list", "--since", "10000000000w"], "--since"),
    (["jobs", "retry", "--since", "99999999999d", "--yes"], "--since"),
    (["stats", "--since", "99999999999d"], "--since"),
    (["prune", "--older-than", "99999999999d", "--yes"], "--older-than"),
    (["jobs", "wait", _JOB, "--timeout", "inf"], "--timeout"),
    (["jobs", "wait", _JOB, "--timeout", "nan"], "--timeout"),
    (["top", "--interval", "inf"], "--interval"),
    (["top", "--interval", "nan"], "--interval"),
    (["ping", "--timeout", "nan"], "--timeout"),
    (["ping", "--timeout", "inf"], "--timeout"),
    (["bench", "--sleep", "nan"], "--sleep"),
    (["worker", "--shutdown-timeout", "nan"], "--shutdown-timeout"),
    (["worker", "--shutdown-timeout", "inf"], "--shutdown-timeout"),
]
#: In a process of their own: accepted, these would start a long-running command.
SUBPROCESS = {"worker", "top"}


@pytest.mark.parametrize(("argv", "named"), CASES, ids=[" ".join(argv) for argv, _ in CASES])
def test_a_bad_number_is_a_usage_error_naming_the_option(
    service_env: dict[str, str], argv: list[str], named: str
) -> None:
    if argv[0] in SUBPROCESS:
        ran = run_cli(*argv, env=service_env, timeout=30)
        code, stdout, stderr = ran.returncode, ran.stdout, ran.stderr
    else:  # in this process: a CLI start costs a second of CPU, and the suite's time matters
        invoked = CliRunner().invoke(main, argv, env=service_env)
        code, stdout, stderr = invoked.exit_code, invoked.stdout, invoked.stderr
        # An exception other than the exit is what a user would have seen as a traceback.
        assert invoked.exception is None or isinstance(invoked.exception, SystemExit), repr(invoked.exception)

    assert "Traceback" not in stderr, stderr
    assert code == 2, (code, stdout, stderr)
    assert named in stderr
    error_lines = [line for line in stderr.splitlines() if "rror" in line]
    assert len(error_lines) == 1, stderr
