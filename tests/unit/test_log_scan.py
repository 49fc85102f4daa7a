"""The session-wide log scan (tests/logscan.py) fails a run that logs a registered password, in a
log record, in a subprocess's output or in a log file, also under xdist; and passes one that masks it."""

from __future__ import annotations

import pytest

from tests.helpers import ROOT

CONFTEST = """
from tests.logscan import _log_scan_attached, log_scan  # noqa: F401
"""

LEAKY = """
import logging
import subprocess
import sys

from jobs.logs import mask_secrets
from tests.logscan import observe, secret


def test_logs_a_password_in_a_record():
    logging.getLogger("app").debug("connecting to amqp://u:%s@h/", secret("record password"))


def test_a_subprocess_prints_a_password():
    password = secret("subprocess password")
    out = subprocess.run([sys.executable, "-c", f"print('pw is {password}')"], capture_output=True, text=True)
    observe(out.stdout, "output of a worker")


def test_a_log_file_holds_a_password(tmp_path):
    (tmp_path / "service.log").write_text("FATAL password " + secret("file password") + " rejected")


def test_masks_its_password():
    logging.getLogger("app").warning(mask_secrets("connecting to amqp://u:%s@h/" % secret("masked password")))
"""

CLEAN = """
import logging

from jobs.logs import mask_secrets
from tests.logscan import secret


def test_masks_its_password():
    logging.getLogger("app").warning(mask_secrets("connecting to amqp://u:%s@h/" % secret("masked password")))
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest(CONFTEST)
    return pytester


@pytest.mark.parametrize("workers", [[], ["-p", "xdist", "-n", "2"]], ids=["one process", "xdist"])
def test_a_run_that_logs_a_registered_password_fails_naming_it(
    inner: pytest.Pytester, workers: list[str]
) -> None:
    inner.makepyfile(test_leaky=LEAKY)

    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *workers)

    assert result.ret != 0
    output = result.stdout.str()
    assert "log scan: registered passwords appear in what the test session logged" in output
    for name in ("record password", "subprocess password", "file password"):
        assert f"secret {name!r}" in output
    assert "'masked password'" not in output
    assert " pw" not in output.replace("pw is", "")  # the report names secrets, never shows one


def test_a_run_that_masks_its_passwords_passes(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_clean=CLEAN)

    result = inner.runpytest_subprocess("-p", "no:cacheprovider")

    assert result.ret == 0, result.stdout.str()
