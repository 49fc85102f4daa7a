"""A queue's prefetch count: its kinds' window per thread, the smallest when kinds share it."""

from __future__ import annotations

import dataclasses

from jobs.kinds import KINDS
from jobs.settings import Settings
from workers.prefetch import DRAMATIQ_PREFETCH, MAX_PREFETCH_COUNT, queue_prefetch


def test_each_queue_takes_its_kinds_window_times_the_threads() -> None:
    settings = Settings(namespace="ns")
    prefetch = queue_prefetch(settings, threads=8)
    assert prefetch("ns.default") == 8 * KINDS["noop"].prefetch == 256
    assert prefetch("ns.email") == 64
    assert prefetch("ns.images") == 16
    assert prefetch("ns.reports") == 8
    assert prefetch("ns.someone-elses") == 8 * DRAMATIQ_PREFETCH


def test_kinds_sharing_a_queue_take_the_smallest_window() -> None:
    slow = dataclasses.replace(KINDS["report"], name="slow", actor_name="slow", queue="default", prefetch=1)
    prefetch = queue_prefetch(Settings(namespace="ns"), threads=4, kinds={**KINDS, "slow": slow})
    assert prefetch("ns.default") == 4


def test_conveyor_prefetch_sets_every_queue_and_amqp_caps_it() -> None:
    settings = Settings(namespace="ns", prefetch=1000)
    assert queue_prefetch(settings, threads=2)("ns.reports") == 2000
    assert queue_prefetch(settings, threads=100)("ns.default") == MAX_PREFETCH_COUNT
