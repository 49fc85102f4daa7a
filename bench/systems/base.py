"""The small interface every compared system implements, and what its worker processes share.

The standard library and ``redis`` only, because the worker processes of every system import
this module: whatever it loads counts in their RSS (the same for all).

Counting completions without distorting them: each worker process keeps an in-memory counter,
the first and last completion times and, for probe jobs, start-minus-sent latencies; a daemon
thread flushes them to Redis every 50 ms (one pipelined round trip). Every system but Conveyor
(which records each job in PostgreSQL anyway, and is counted from there) pays the same small cost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[2]

#: Queue names, Redis keys and the Conveyor namespace all start with this (``BENCH_NAMESPACE``
#: sets another, so that two benchmarks can share the servers; worker processes inherit it).
NAMESPACE = os.environ.get("BENCH_NAMESPACE", "bench")
#: Seconds between two flushes of a worker process's counters to Redis.
FLUSH_INTERVAL = 0.05

ENV_AMQP_URL = "BENCH_AMQP_URL"
ENV_REDIS_URL = "BENCH_REDIS_URL"
ENV_KEY_PREFIX = "BENCH_KEY_PREFIX"

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_bench"


@dataclass(frozen=True)
class Config:
    """One comparison's settings, the same for every system."""

    amqp_url: str = DEFAULT_AMQP_URL
    redis_url: str = DEFAULT_REDIS_URL
    database_url: str = DEFAULT_DATABASE_URL
    processes: int = 2
    threads: int = 8
    log_dir: Path = field(default_factory=lambda: Path("/tmp"))
    #: Unacknowledged messages per worker thread, the same for every system: Conveyor's window for
    #: the no-op kind (``JobKind.prefetch``; Dramatiq's own default is 2).
    prefetch_per_thread: int = 32

    @property
    def prefetch(self) -> int:
        """Unacknowledged messages per worker process, the same for every system."""
        return self.threads * self.prefetch_per_thread


@dataclass(frozen=True)
class Completions:
    """Jobs completed so far, and when the first and the last completed (epoch seconds)."""

    count: int
    first: float | None = None
    last: float | None = None


class System(ABC):
    """One system under test: its producer, its workers, and how its completions are counted."""

    #: Short key used in results (``dramatiq``, ``celery_prefork``…) and its display name.
    key: str
    label: str
    #: How the workers run, for the report.
    description: str
    #: The queue the workers consume, and how many consumers it has once they are all ready.
    queue: str
    #: Producer APIs: ``each`` = one job at a time, each confirmed before the next;
    #: ``bulk`` = pipelined or batched. Subclasses fill in what they support.
    producers: Mapping[str, str]
    #: The producer that fills backlogs and feeds the end-to-end run.
    primary: str = "each"

    def __init__(self, config: Config, rabbit: Any) -> None:
        self.config = config
        self.rabbit = rabbit  # a bench.systems.rabbit.Rabbit, built by the coordinator

    @property
    @abstractmethod
    def expected_consumers(self) -> int:
        """Consumers on :attr:`queue` once every worker is ready."""

    @property
    def queues(self) -> list[str]:
        """Every queue this system uses (purged between phases)."""
        return [self.queue]

    def setup(self) -> None:  # noqa: B027 (an optional hook)
        """Connect the producer side (once, before the first run)."""

    def close(self) -> None:  # noqa: B027 (an optional hook)
        """Release the producer side."""

    def reconnect(self) -> None:  # noqa: B027 (an optional hook)
        """Drop the producer's connections, so that the next phase starts on fresh ones.

        Called before every timed phase: a connection left idle through another system's run
        would otherwise have been closed by RabbitMQ (missed heartbeats) and be reopened inside
        the timing.
        """

    @abstractmethod
    def reset(self) -> None:
        """Empty the queues and forget every completion (workers idle or stopped)."""

    @abstractmethod
    def enqueue(self, count: int, producer: str, progress: Callable[[int], None]) -> None:
        """Enqueue ``count`` no-op jobs with ``producer``; return once all are confirmed."""

    @abstractmethod
    def send_probe(self) -> None:
        """Enqueue one no-op job carrying its send time, for the latency figures."""

    @abstractmethod
    def completions(self) -> Completions:
        """What the workers have completed since the last :meth:`reset`."""

    @abstractmethod
    def probe_latencies(self) -> list[float]:
        """Milliseconds from just before sending to the start in a worker, one per completed probe."""

    @abstractmethod
    def start_workers(self) -> list[subprocess.Popen[bytes]]:
        """Start the worker processes (not waiting for them to be ready)."""

    def stop_workers(self, workers: list[subprocess.Popen[bytes]]) -> None:
        stop_processes(workers)


class RedisCountedSystem(System):
    """A system whose workers count their completions with :class:`Recorder` (all but Conveyor)."""

    @cached_property
    def counter(self) -> RedisCompletions:
        return RedisCompletions(self.config.redis_url, f"{NAMESPACE}:cmp:{self.key}")

    def reset(self) -> None:
        self.rabbit.purge(self.queues)
        self.counter.reset()

    def completions(self) -> Completions:
        return self.counter.snapshot()

    def probe_latencies(self) -> list[float]:
        return self.counter.latencies()


# ------------------------------------------------------------------ worker side ----


class Recorder:
    """A worker process's completion counter, flushed to Redis by a daemon thread.

    Safe across ``fork`` (Celery's prefork pool): a child starts afresh on its first record.
    """

    def __init__(self) -> None:
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._count = 0
        self._first: float | None = None
        self._last = 0.0
        self._latencies: list[float] = []

    def record(self, sent_at: float = 0.0) -> None:
        """One job started (and, being a no-op, completed) now; ``sent_at`` > 0 marks a probe."""
        now = time.time()
        if self._pid != os.getpid():
            self._start()
        with self._lock:
            self._count += 1
            if self._first is None:
                self._first = now
            self._last = now
            if sent_at:
                self._latencies.append((now - sent_at) * 1000)

    def _start(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._count, self._first, self._last, self._latencies = 0, None, 0.0, []
        self._redis = redis.Redis.from_url(os.environ.get(ENV_REDIS_URL, DEFAULT_REDIS_URL))
        self._prefix = os.environ.get(ENV_KEY_PREFIX, f"{NAMESPACE}:cmp")
        threading.Thread(target=self._flush_forever, name="bench-recorder", daemon=True).start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            if not self._count:
                return
            count, first, last, latencies = self._count, self._first, self._last, self._latencies
            self._count, self._first, self._latencies = 0, None, []
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.incrby(f"{self._prefix}:count", count)
            pipe.rpush(f"{self._prefix}:spans", f"{first!r} {last!r}")
            if latencies:
                pipe.rpush(f"{self._prefix}:latency", *latencies)
            pipe.execute()
        except Exception:
            # Redis hiccup: keep the numbers for the next flush.
            with self._lock:
                self._count += count
                self._first = first if self._first is None or first is None else min(first, self._first)
                self._last = max(last, self._last)
                self._latencies[:0] = latencies


class RedisCompletions:
    """The coordinator's view of what :class:`Recorder` instances flushed under one key prefix."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.prefix = prefix
        self._redis = redis.Redis.from_url(redis_url)

    def reset(self) -> None:
        self._redis.delete(*(f"{self.prefix}:{name}" for name in ("count", "spans", "latency")))

    def snapshot(self, with_times: bool = True) -> Completions:
        count = int(self._redis.get(f"{self.prefix}:count") or 0)
        if not count or not with_times:
            return Completions(count)
        spans = [s.split() for s in self._redis.lrange(f"{self.prefix}:spans", 0, -1)]
        return Completions(count, min(float(a) for a, _ in spans), max(float(b) for _, b in spans))

    def latencies(self) -> list[float]:
        return [float(v) for v in self._redis.lrange(f"{self.prefix}:latency", 0, -1)]


# ------------------------------------------------------------------ processes ----


def worker_env(config: Config, key_prefix: str, **extra: str) -> dict[str, str]:
    """The environment of a worker process: the bench URLs, and the repository on the path."""
    env = dict(os.environ)
    env.update(
        {
            ENV_AMQP_URL: config.amqp_url,
            ENV_REDIS_URL: config.redis_url,
            ENV_KEY_PREFIX: key_prefix,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        }
    )
    env.update(extra)
    return env


def launch(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``python ARGS`` in its own session (so that its whole process group can be stopped)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_processes(workers: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    """SIGTERM each (a graceful stop), then SIGKILL the process group of any still alive."""
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in workers:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def process_tree(roots: list[int]) -> list[int]:
    """``roots`` and all their descendants still alive."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if Path(f"/proc/{pid}").exists():
            found.append(pid)
            todo.extend(parents.get(pid, []))
    return found


def rss_kib(pid: int) -> int:
    """VmRSS of one process, in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def workers_rss(workers: list[subprocess.Popen[bytes]]) -> tuple[float, int]:
    """Summed RSS (MiB) of the worker processes and their children, and how many processes."""
    pids = process_tree([w.pid for w in workers])
    return sum(rss_kib(pid) for pid in pids) / 1024, len(pids)
