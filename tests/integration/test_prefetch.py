"""Each queue's consumer takes as many messages ahead as its kind asks, per thread
(``workers/prefetch.py``), or ``CONVEYOR_PREFETCH`` for all; RabbitMQ's own view is checked."""

from __future__ import annotations

import json
import urllib.request
from base64 import b64encode

import pytest

from jobs.settings import Settings
from tests.helpers import WorkerProcess, eventually

pytestmark = [pytest.mark.integration]


def prefetch_counts(namespace: str) -> dict[str, int]:
    """The prefetch count of every consumer of the namespace's queues, by queue, as RabbitMQ has it
    (the delay queues apart: they keep Dramatiq's own deep window)."""
    request = urllib.request.Request(
        "http://127.0.0.1:15672/api/consumers",
        headers={"Authorization": "Basic " + b64encode(b"guest:guest").decode()},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        consumers = json.load(response)
    return {
        c["queue"]["name"]: int(c["prefetch_count"])
        for c in consumers
        if c["queue"]["name"].startswith(namespace + ".") and not c["queue"]["name"].endswith(".DQ")
    }


QUEUES = ("default", "email", "reports")


def test_each_kinds_queue_gets_its_window_per_thread(
    settings: Settings, start_worker: WorkerProcess.Factory
) -> None:
    start_worker("--processes", "1", "--threads", "2", "--queues", ",".join(QUEUES))
    expected = {
        settings.queue_name("default"): 64,
        settings.queue_name("email"): 16,
        settings.queue_name("reports"): 2,
    }
    assert eventually(lambda: (c := prefetch_counts(settings.namespace)) == expected and c) == expected


def test_conveyor_prefetch_sets_every_queues_window(
    settings: Settings, start_worker: WorkerProcess.Factory
) -> None:
    start_worker(
        "--processes", "1", "--threads", "2", "--queues", ",".join(QUEUES), env={"CONVEYOR_PREFETCH": "3"}
    )
    expected = {settings.queue_name(queue): 6 for queue in QUEUES}
    assert eventually(lambda: (c := prefetch_counts(settings.namespace)) == expected and c) == expected
