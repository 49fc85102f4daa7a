"""The no-op section: Conveyor side by side with raw pika, bare Dramatiq and Celery, on one RabbitMQ.

Every system gets the same broker, the same worker processes × threads and the same prefetch
(``--prefetch`` per thread, default 32: Conveyor's window for no-op jobs, which it needs because a
message is acknowledged only once its outcome is stored; Dramatiq's own default is 2), and its
workers serve the no-op queue only. For
each run, every system goes through:

1. enqueue: N no-op jobs with each of its producer APIs, workers stopped (one at a time, each
   confirmed; and pipelined or batched where the system has it). The last batch is the backlog.
   With ``--enqueue-only`` a run stops here: the producers alone, side by side, in a minute or two.
2. drain: start the workers, wait until every consumer is attached ("ready"), time the backlog.
3. RSS of the worker processes, then latency: single probe jobs into idle workers, 20 ms apart.
4. end-to-end: enqueue N more with the workers running, with each producer API; time until the
   last one completes.

Queues are purged and completion counters (Conveyor: its ``jobs`` rows) cleared between phases.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from typing import Any

from bench import report
from bench.harness import BenchFailed, Progress, measured_twice
from bench.systems.base import Completions, Config, System, workers_rss
from bench.systems.rabbit import Rabbit

SYSTEMS = ["pika", "dramatiq", "celery_prefork", "celery_threads", "conveyor"]
READY_TIMEOUT = 120.0
#: Seconds between two looks at how many jobs completed.
POLL_INTERVAL = 0.25
#: Seconds without a single completion after which a measurement is abandoned.
STALL_TIMEOUT = 60.0


def build_system(key: str, config: Config, rabbit: Rabbit) -> System:
    # Imported here: dramatiq_app and celery_app build their broker from BENCH_AMQP_URL on import.
    if key == "pika":
        from bench.systems.pika_raw import PikaSystem

        return PikaSystem(config, rabbit)
    if key == "dramatiq":
        from bench.systems.dramatiq_app import DramatiqSystem

        return DramatiqSystem(config, rabbit)
    if key.startswith("celery_"):
        from bench.systems.celery_app import CelerySystem

        return CelerySystem(config, rabbit, pool=key.removeprefix("celery_"))
    if key == "conveyor":
        from bench.systems.conveyor_system import ConveyorSystem

        return ConveyorSystem(config, rabbit)
    raise ValueError(f"unknown system {key!r}; known: {', '.join(SYSTEMS)}")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def check_alive(workers: list[subprocess.Popen[bytes]]) -> None:
    for proc in workers:
        if proc.poll() is not None:
            raise BenchFailed(f"worker process {proc.pid} exited with code {proc.returncode}")


class Runner:
    def __init__(self, args: argparse.Namespace, config: Config, rabbit: Rabbit, log: Progress) -> None:
        self.jobs: int = args.jobs
        self.samples: int = args.latency_samples
        self.spacing: float = args.probe_spacing_ms / 1000
        self.enqueue_only: bool = getattr(args, "enqueue_only", False)
        self.config = config
        self.rabbit = rabbit
        self.log = log

    def enqueue(self, system: System, producer: str) -> float:
        """Enqueue the N jobs with ``producer``; returns jobs per second."""
        system.reconnect()
        started = time.perf_counter()
        system.enqueue(self.jobs, producer, lambda done: None)
        rate = self.jobs / (time.perf_counter() - started)
        self.log(
            f"  {system.key}: enqueue {self.jobs:,} ({producer}: {system.producers[producer]}) {rate:,.0f}/s"
        )
        return rate

    def wait_ready(self, system: System, workers: list[subprocess.Popen[bytes]]) -> tuple[float, float]:
        """When the first consumer attached to the queue (consuming began), and when the last did."""
        deadline = time.monotonic() + READY_TIMEOUT
        first = None
        while (consumers := self.rabbit.consumers(system.queue)) < system.expected_consumers:
            if consumers and first is None:
                first = time.time()
            check_alive(workers)
            if time.monotonic() > deadline:
                raise BenchFailed(f"workers not consuming {system.queue} after {READY_TIMEOUT:g} s")
            time.sleep(0.005)
        last = time.time()
        return (first or last), last

    def wait_done(self, system: System, target: int, workers: list[subprocess.Popen[bytes]]) -> Completions:
        seen, changed, told = -1, time.monotonic(), time.monotonic()
        while True:
            done = system.completions()
            if done.count >= target:
                return done
            now = time.monotonic()
            if done.count != seen:
                seen, changed = done.count, now
            elif now - changed > STALL_TIMEOUT:
                raise BenchFailed(
                    f"stuck at {done.count:,} of {target:,} completions for {STALL_TIMEOUT:g} s"
                )
            if now - told > 5:
                self.log(f"  {system.key}: {done.count:,}/{target:,} completed")
                told = now
            check_alive(workers)
            # Rates come from the completions' own times; the interval only delays noticing the
            # end. Long, because Conveyor's count is a query on the cores being measured.
            time.sleep(POLL_INTERVAL)

    def probe(self, system: System, workers: list[subprocess.Popen[bytes]]) -> list[float]:
        system.reconnect()
        for _ in range(self.samples):
            system.send_probe()
            time.sleep(self.spacing)
        self.wait_done(system, self.samples, workers)
        deadline = time.monotonic() + 10
        while len(latencies := system.probe_latencies()) < self.samples and time.monotonic() < deadline:
            time.sleep(0.05)
        if len(latencies) < self.samples:
            raise BenchFailed(f"{len(latencies)} of {self.samples} latency probes recorded")
        return latencies

    def enqueue_all(self, system: System) -> dict[str, float]:
        """Every producer's enqueue rate into idle queues; the primary one's jobs are left queued
        (the backlog of the drain)."""
        metrics = {}
        system.reset()
        if hasattr(system, "vacuum"):
            system.vacuum()
        # Every producer but the primary one: measured alone, then thrown away.
        for producer in [p for p in system.producers if p != system.primary]:
            metrics[f"enqueue_{producer}_per_s"] = self.enqueue(system, producer)
            system.reset()
        metrics[f"enqueue_{system.primary}_per_s"] = self.enqueue(system, system.primary)
        return metrics

    def run_once(self, system: System) -> dict[str, float]:
        n, metrics = self.jobs, self.enqueue_all(system)
        if self.enqueue_only:
            system.reset()
            return metrics
        launched = time.time()
        workers = system.start_workers()
        try:
            ready, all_ready = self.wait_ready(system, workers)
            done = self.wait_done(system, n, workers)
            assert done.first is not None
            assert done.last is not None
            metrics["startup_s"] = all_ready - launched
            metrics["drain_per_s"] = n / max(done.last - done.first, 1e-6)
            metrics["drain_from_ready_per_s"] = n / max(done.last - ready, 1e-6)
            metrics["rss_mib"], metrics["worker_processes"] = workers_rss(workers)
            self.log(
                f"  {system.key}: drain {metrics['drain_per_s']:,.0f}/s "
                f"({metrics['drain_from_ready_per_s']:,.0f}/s from ready, start-up {metrics['startup_s']:.2f} s), "
                f"RSS {metrics['rss_mib']:.0f} MiB in {metrics['worker_processes']} processes"
            )
            system.reset()
            latencies = self.probe(system, workers)
            metrics["latency_p50_ms"] = percentile(latencies, 0.5)
            metrics["latency_p99_ms"] = percentile(latencies, 0.99)
            self.log(
                f"  {system.key}: latency p50 {metrics['latency_p50_ms']:.1f} ms, "
                f"p99 {metrics['latency_p99_ms']:.1f} ms ({len(latencies)} probes)"
            )
            metrics.update(self.end_to_end(system, workers))
            metrics["rss_end_mib"] = workers_rss(workers)[0]
        finally:
            system.stop_workers(workers)
        system.reset()
        return metrics

    def end_to_end(self, system: System, workers: list[subprocess.Popen[bytes]]) -> dict[str, float]:
        """N jobs enqueued into running workers with each producer API (the primary one first)."""
        n, metrics = self.jobs, {}
        for producer in sorted(system.producers, key=lambda p: p != system.primary):
            system.reset()
            system.reconnect()
            first = time.time()
            system.enqueue(n, producer, lambda done: None)
            metrics[f"e2e_enqueue_{producer}_per_s"] = n / (time.time() - first)
            done = self.wait_done(system, n, workers)
            assert done.last is not None
            metrics[f"e2e_{producer}_per_s"] = n / max(done.last - first, 1e-6)
            self.log(
                f"  {system.key}: end-to-end ({producer}) {metrics[f'e2e_{producer}_per_s']:,.0f}/s "
                f"(producer {metrics[f'e2e_enqueue_{producer}_per_s']:,.0f}/s alongside the workers)"
            )
        return metrics


def run_noop(args: argparse.Namespace, config: Config, rabbit: Rabbit, log: Progress) -> dict[str, Any]:
    """Every system, ``args.runs`` times (each run tried twice before it counts as failed); the
    no-op section of the results JSON."""
    started = time.monotonic()
    keys = [k.strip() for k in args.systems.split(",") if k.strip()]
    systems = [build_system(key, config, rabbit) for key in keys]
    # A clean start: whatever an interrupted earlier run left behind goes (Conveyor's queues are
    # only purged, by its first reset: they are declared the way its workers expect them).
    rabbit.delete([q for system in systems if system.key != "conveyor" for q in system.queues])
    for system in systems:
        system.setup()
    section: dict[str, Any] = {
        "title": "No-op jobs: Conveyor, raw pika, bare Dramatiq and Celery",
        "config": {
            "jobs": args.jobs,
            "processes": config.processes,
            "threads": config.threads,
            "prefetch": config.prefetch,
            "latency_samples": args.latency_samples,
            "probe_spacing_ms": args.probe_spacing_ms,
            "enqueue_only": getattr(args, "enqueue_only", False),
        },
        "systems": {
            s.key: {
                "label": s.label,
                "description": s.description,
                "producers": dict(s.producers),
                "primary": s.primary,
            }
            for s in systems
        },
        "runs": [],
    }
    log(
        f"no-op: {args.jobs:,} jobs × {args.runs} run(s), {config.processes} processes × {config.threads} "
        f"threads, prefetch {config.prefetch}; systems: {', '.join(keys)}; worker logs in {config.log_dir}"
    )
    runner = Runner(args, config, rabbit, log)
    try:
        for run in range(1, args.runs + 1):
            for system in systems:
                section["runs"].append(_one_run(runner, system, run, args.runs))
    except KeyboardInterrupt:
        log("no-op: interrupted; reporting the runs done so far")
        section["interrupted"] = True
    finally:
        for system in systems:
            try:
                system.close()
            except Exception as exc:
                log(f"closing {system.key}: {exc}")
        section["medians"] = report.medians(section["runs"])
        section["ratios"] = report.ratios(section["medians"])
        section["duration_s"] = round(time.monotonic() - started, 1)
    return section


def _one_run(runner: Runner, system: System, run: int, runs: int) -> dict[str, Any]:
    log = runner.log
    log(f"no-op run {run}/{runs}: {system.label}")

    def again() -> None:
        time.sleep(5)
        runner.rabbit.close()

    record = measured_twice(system.key, lambda: runner.run_once(system), log, before_retry=again)
    return {"run": run, "system": system.key, **record}
