"""Helpers shared by the tests: worker subprocesses, queue counts, polling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pika
from sqlalchemy import select

from jobs.kinds import KINDS
from jobs.store import Database, SeenMessage
from jobs.store.models import AttemptRow, ClaimRow
from tests.logscan import observe, secret

__all__ = ["observe", "secret"]  # the log scan's API, for tests that use passwords

ROOT = Path(__file__).resolve().parent.parent
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
T = TypeVar("T")


def queue_names(namespace: str) -> list[str]:
    """Every queue Conveyor may declare in ``namespace``."""
    names = []
    for kind in KINDS.values():
        base = f"{namespace}.{kind.queue}"
        names += [base, f"{base}.DQ", f"{base}.XQ"]
    return names


def seen_noop(queue: str, job_id: str | None = None) -> SeenMessage:
    """What a worker reads from a ``noop`` job's message on ``queue`` (a new job id by default)."""
    return SeenMessage(
        job_id=job_id or str(uuid.uuid4()),
        kind="noop",
        queue=queue,
        payload={"sleep": 0},
        max_retries=3,
        created_at=datetime.now(UTC),
    )


def running_pid(db: Database, job_id: str) -> int:
    """The worker process running ``job_id`` now: its open attempt's, or for a short run whose
    start is not written yet, its claim row's (``jobs/store/claims.py``)."""
    with db.session() as session:
        pid = session.scalar(select(ClaimRow.pid).where(ClaimRow.job_id == job_id))
        if pid is None:
            pid = session.scalar(
                select(AttemptRow.pid).where(AttemptRow.job_id == job_id, AttemptRow.finished_at.is_(None))
            )
    if pid is None:
        raise AssertionError(f"job {job_id} is not running")
    return int(pid)


def _declared(queue: str) -> tuple[int, int]:
    """``queue``'s ready messages and consumers, by a passive declare ((0, 0) when it does not exist)."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        try:
            method = channel.queue_declare(queue, passive=True).method
        except pika.exceptions.ChannelClosedByBroker:
            return 0, 0
        return int(method.message_count), int(method.consumer_count)
    finally:
        connection.close()


def message_count(queue: str) -> int:
    """Ready messages in ``queue`` (0 when it does not exist)."""
    return _declared(queue)[0]


def consumer_count(queue: str) -> int:
    """Consumers attached to ``queue`` (0 when it does not exist)."""
    return _declared(queue)[1]


def next_message(consumer: Any, timeout: float = 10.0) -> Any:
    """The next message a Dramatiq consumer delivers (it yields None while it waits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            return message
    raise AssertionError("no message delivered")


def eventually(check: Callable[[], T | None], *, timeout: float = 20.0, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last value: {last!r})")


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``conveyor ARGS`` as a user would, capturing output (scanned for passwords)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args],
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
    observe(result.stdout + result.stderr, f"output of `conveyor {args[0] if args else ''}`")
    return result


class WorkerProcess:
    """A `conveyor worker` subprocess whose log lines are collected as they come."""

    class Factory(Protocol):
        def __call__(self, *args: str, env: dict[str, str] | None = None) -> WorkerProcess: ...

    def __init__(self, process: subprocess.Popen[str], processes: int) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.processes = processes

    @classmethod
    def start(cls, env: dict[str, str], *args: str, ready_timeout: float = 30) -> WorkerProcess:
        argv = list(args) or ["--processes", "1", "--threads", "4"]
        processes = int(argv[argv.index("--processes") + 1]) if "--processes" in argv else 2
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "worker", "--shutdown-timeout", "30", *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        worker = cls(process, processes)
        worker.wait_ready(processes, ready_timeout)
        return worker

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            observe(line, f"output of `conveyor worker` (pid {self.process.pid})")
            self.lines.append(line.rstrip("\n"))

    def count(self, fragment: str) -> int:
        return sum(fragment in line for line in list(self.lines))

    def wait_ready(self, expected: int, timeout: float = 30) -> None:
        try:
            eventually(lambda: self.count(" ready: ") >= expected or None, timeout=timeout)
        except AssertionError:
            self.terminate()
            raise AssertionError("worker did not start:\n" + "\n".join(self.lines)) from None

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        return self.process.wait(timeout=timeout)

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)
