"""A pytest plugin: no password the test session uses may appear in any log it writes.

Tests get their passwords from :func:`secret`, which makes a fresh random one and registers it.
Everything the session logs is then scanned for every registered password:

- every record of the test process's Python logging, at every level (a handler on the root
  logger, and the root logger opened to DEBUG for each test);
- every line of output of the ``conveyor`` subprocesses the tests start (workers, schedulers,
  CLI runs): :func:`observe` is called by ``tests.helpers`` for each line, or by a test itself;
- every log file (``*.log``, ``*.out``, ``*.err``) under the session's temporary folder, read at
  the end of the session (a PostgreSQL or RabbitMQ started by a test logs there).

At the end of the session, a leak fails the run with the password's name and where it was
seen (never the password itself). Under xdist each worker process scans its own logs and
subprocesses, and fails its own last test: the controller then fails the run.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

#: Files under the session's temporary folder that count as logs.
LOG_SUFFIXES = (".log", ".out", ".err")
#: Leaks listed in the failure (the rest are counted).
SHOWN_LEAKS = 20


@dataclass
class _Registry:
    #: needle → name: the random part of each password (and its percent-encoded form).
    needles: dict[str, str] = field(default_factory=dict)
    #: (name, where) of each leak, in the order seen; never the password.
    leaks: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    #: One alternation of every needle, rebuilt when one is added: a record is searched once.
    pattern: re.Pattern[str] | None = None

    def add(self, needle: str, name: str) -> None:
        with self.lock:
            self.needles.setdefault(needle, name)
            self.pattern = re.compile("|".join(re.escape(n) for n in self.needles))

    def scan(self, text: str, where: str) -> None:
        pattern = self.pattern
        if not text or pattern is None or pattern.search(text) is None:
            return
        with self.lock:
            found = [(name, where) for needle, name in self.needles.items() if needle in text]
            self.leaks.extend(leak for leak in found if leak not in self.leaks)


_registry = _Registry()


def secret(name: str, *, tail: str = "") -> str:
    """A fresh random password for this test, registered with the log scan.

    ``tail`` is appended as it is (e.g. ``"@ /x"`` to exercise escaping); the random part
    before it is what the scan looks for, so a log showing even part of the password fails.
    """
    core = f"pw{secrets.token_hex(10)}"
    register(name, core)
    return core + tail


def register(name: str, value: str) -> None:
    """Register a password the tests did not make with :func:`secret` (e.g. one a service
    imposes). Prefer :func:`secret`: a short or common value would match innocent text."""
    if len(value) < 8:
        raise ValueError(f"secret {name!r} is too short for the log scan to tell it from other text")
    _registry.add(value, name)
    _registry.add(quote(value, safe=""), name)


def observe(text: str, where: str) -> None:
    """Scan a line (or block) of log output that the session wrote somewhere else: a subprocess's
    stdout/stderr, a service's log."""
    _registry.scan(text, where)


def leaks() -> list[tuple[str, str]]:
    """``(name, where)`` of every leak seen so far."""
    with _registry.lock:
        return list(_registry.leaks)


class _ScanHandler(logging.Handler):
    """Scans every record as raw as it is emitted: its message, exception and stack."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            parts = [record.getMessage()]
            if record.exc_info:
                parts.append(self._formatter.formatException(record.exc_info))
            parts += [record.exc_text or "", record.stack_info or ""]
            _registry.scan("\n".join(parts), f"log record of {record.name} ({record.levelname})")
        except Exception:  # a record that cannot be formatted is the logging module's to report
            self.handleError(record)


_handler = _ScanHandler()


def _attach() -> None:
    root = logging.getLogger()
    if _handler not in root.handlers:
        root.addHandler(_handler)
    root.setLevel(logging.DEBUG)


def scan_log_files(folder: Path) -> None:
    """Scan every log file under ``folder``."""
    for path in sorted(folder.rglob("*")):
        if path.suffix in LOG_SUFFIXES and path.is_file():
            try:
                observe(path.read_text(errors="replace"), f"file {path}")
            except OSError:
                continue


def _failure(found: list[tuple[str, str]]) -> str:
    lines = [f"  secret {name!r} in {where}" for name, where in found[:SHOWN_LEAKS]]
    if len(found) > SHOWN_LEAKS:
        lines.append(f"  … and {len(found) - SHOWN_LEAKS} more")
    return "log scan: registered passwords appear in what the test session logged:\n" + "\n".join(lines)


@pytest.fixture(scope="session", autouse=True)
def log_scan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail the session (its last test, at teardown) when a registered password was logged."""
    _attach()
    yield
    scan_log_files(tmp_path_factory.getbasetemp())
    found = leaks()
    if found:
        pytest.fail(_failure(found), pytrace=False)


@pytest.fixture(autouse=True)
def _log_scan_attached() -> None:
    """Each test starts with the scan attached at DEBUG: an in-process CLI run reconfigures logging."""
    _attach()
