"""Fault-injection (chaos) suite: real worker processes against real services that it disrupts.

These tests stop RabbitMQ, PostgreSQL and Redis, which every other test on the machine
shares: they run alone and serially (``make chaos``: ``pytest tests/chaos -n 0 -m chaos``)
and are deselected from every run whose ``-m`` expression does not mention ``chaos``.

Each test appends its figures (jobs, lost, duplicated, time to recover, …) as one JSON
line to ``$CHAOS_REPORT`` (default ``/tmp/chaos-report.jsonl``); the figures of the
session are printed at its end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.ledger import Ledger
from tests.chaos.services import LOCK, restore_all

HERE = Path(__file__).resolve().parent
DEFAULT_REPORT = "/tmp/chaos-report.jsonl"
_RESULTS = pytest.StashKey[list[dict[str, Any]]]()

Record = Callable[..., dict[str, Any]]


def _is_chaos(item: pytest.Item) -> bool:
    return item.get_closest_marker("chaos") is not None or HERE in Path(str(item.path)).resolve().parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect chaos tests unless the ``-m`` expression names them (``-m chaos``)."""
    if "chaos" in (config.option.markexpr or ""):
        return
    chaos = [item for item in items if _is_chaos(item)]
    if chaos:
        config.hook.pytest_deselected(items=chaos)
        items[:] = [item for item in items if not _is_chaos(item)]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, [])
    if not results:
        return
    terminalreporter.section("chaos figures")
    for figures in results:
        terminalreporter.write_line(json.dumps(figures, sort_keys=True))
    terminalreporter.write_line(f"(appended to {report_path()})")


def report_path() -> Path:
    return Path(os.environ.get("CHAOS_REPORT") or DEFAULT_REPORT)


@pytest.fixture(scope="session", autouse=True)
def services_restored(database_url: str) -> Iterator[None]:
    """Whatever a test did, all three services answer again after the session.

    Depends on ``database_url`` so that it is torn down first: the test database can be
    dropped afterwards.
    """
    holder = LOCK.read_text().strip() if LOCK.exists() else ""
    if holder and holder != str(os.getpid()) and Path(f"/proc/{holder}").exists():
        pytest.exit(f"{LOCK} is held by pid {holder}: another chaos run is disrupting the services", 3)
    restore_all()
    try:
        yield
    finally:
        restore_all()


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    reader = Ledger(database_url)
    yield reader
    reader.close()


@pytest.fixture
def chaos_report(request: pytest.FixtureRequest) -> Record:
    """``record(**figures)``: append this test's figures to the report and print them."""

    def record(**figures: Any) -> dict[str, Any]:
        line = {"test": request.node.name, "at": datetime.now(UTC).isoformat(timespec="seconds"), **figures}
        with report_path().open("a") as report:
            report.write(json.dumps(line, sort_keys=True, default=str) + "\n")
        print("chaos figures:", json.dumps(line, sort_keys=True, default=str), flush=True)
        request.config.stash.setdefault(_RESULTS, []).append(line)
        return line

    return record
