"""`make bench`: Conveyor side by side with raw pika, bare Dramatiq and Celery, on one RabbitMQ.

Every system gets the same broker, the same worker processes × threads and the same prefetch
(Dramatiq's default, threads × 2 per process), and for each run goes through:

1. enqueue: N no-op jobs with each of its producer APIs, workers stopped (one at a time, each
   confirmed; and pipelined or batched where the system has it). The last batch is the backlog.
2. drain: start the workers, wait until every consumer is attached ("ready"), time the backlog.
3. RSS of the worker processes, then latency: single probe jobs into idle workers, 20 ms apart.
4. end-to-end: enqueue N more with the workers running, with each producer API; time until the
   last one completes.

Queues are purged and completion counters (Conveyor: its ``jobs`` rows) cleared between phases.

    python bench/compare.py --jobs 20000 --runs 3 --processes 2 --threads 8
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import report
from bench.systems.base import (
    DEFAULT_AMQP_URL,
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    ENV_AMQP_URL,
    Completions,
    Config,
    System,
    workers_rss,
)
from bench.systems.rabbit import Rabbit

SYSTEMS = ["pika", "dramatiq", "celery_prefork", "celery_threads", "conveyor"]
#: Held by the fault-injection suite (tests/chaos) while it has a service stopped.
CHAOS_LOCK = Path("/tmp/chaos.lock")
#: Seconds without a single completion after which a measurement is abandoned.
STALL_TIMEOUT = 60.0
READY_TIMEOUT = 120.0


class BenchFailed(RuntimeError):
    pass


class Progress:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {message}", flush=True)


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


def wait_quiet(log: Progress) -> None:
    """Wait while the fault-injection suite has a service stopped (it holds /tmp/chaos.lock)."""
    told = False
    while CHAOS_LOCK.exists():
        try:
            holder = int(CHAOS_LOCK.read_text().split()[0])
            os.kill(holder, 0)
        except (ValueError, IndexError, OSError):
            return
        if not told:
            log(f"{CHAOS_LOCK} is held by pid {holder} (a service is disrupted): waiting")
            told = True
        time.sleep(2)


class Runner:
    def __init__(self, args: argparse.Namespace, config: Config, rabbit: Rabbit, log: Progress) -> None:
        self.jobs: int = args.jobs
        self.samples: int = args.latency_samples
        self.spacing: float = args.probe_spacing_ms / 1000
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
            time.sleep(0.05)

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

    def run_once(self, system: System) -> dict[str, float]:
        n, metrics = self.jobs, {}
        system.reset()
        if hasattr(system, "vacuum"):
            system.vacuum()
        # Every producer but the primary one: measured alone, then thrown away.
        for producer in [p for p in system.producers if p != system.primary]:
            metrics[f"enqueue_{producer}_per_s"] = self.enqueue(system, producer)
            system.reset()
        metrics[f"enqueue_{system.primary}_per_s"] = self.enqueue(system, system.primary)
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
            # End to end with each producer API (the primary one first).
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
            metrics["rss_end_mib"] = workers_rss(workers)[0]
        finally:
            system.stop_workers(workers)
        system.reset()
        return metrics


def machine_info(rabbit: Rabbit, config: Config) -> dict[str, Any]:
    import psycopg
    import redis

    packages = {}
    for name in ("dramatiq", "celery", "kombu", "pika", "psycopg", "SQLAlchemy", "redis"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = "not installed"
    with psycopg.connect(config.database_url.replace("+psycopg", "")) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "rabbitmq": rabbit.server_version(),
        "postgresql": row[0].split()[0] if row else "?",
        "redis": redis.Redis.from_url(config.redis_url).info("server")["redis_version"],
        "packages": packages,
        "conveyor_commit": commit.stdout.strip() or "?",
        "loadavg_at_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20000, help="jobs per measurement (default 20000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of everything; medians are reported")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process (default 8)")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--probe-spacing-ms", type=float, default=20.0)
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)}"
    )
    parser.add_argument("--amqp-url", default=os.environ.get(ENV_AMQP_URL, DEFAULT_AMQP_URL))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)

    log = Progress()
    os.environ[ENV_AMQP_URL] = args.amqp_url
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"conveyor-bench-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    config = Config(
        amqp_url=args.amqp_url,
        redis_url=args.redis_url,
        database_url=args.database_url,
        processes=args.processes,
        threads=args.threads,
        log_dir=log_dir,
    )
    keys = [k.strip() for k in args.systems.split(",") if k.strip()]
    wait_quiet(log)
    rabbit = Rabbit(config.amqp_url)
    systems = [build_system(key, config, rabbit) for key in keys]
    # A clean start: whatever an interrupted earlier run left behind goes (Conveyor's queues are
    # only purged, by its first reset: they are declared the way its workers expect them).
    for system in systems:
        if system.key != "conveyor":
            rabbit.delete(system.queues)
    for system in systems:
        system.setup()
    started = datetime.now().astimezone()
    results: dict[str, Any] = {
        "date": started.date().isoformat(),
        "started_at": started.isoformat(timespec="seconds"),
        "config": {
            "jobs": args.jobs,
            "runs": args.runs,
            "processes": args.processes,
            "threads": args.threads,
            "prefetch": config.prefetch,
            "latency_samples": args.latency_samples,
            "probe_spacing_ms": args.probe_spacing_ms,
        },
        "machine": machine_info(rabbit, config),
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
        f"{args.jobs:,} jobs × {args.runs} run(s), {args.processes} processes × {args.threads} threads, "
        f"prefetch {config.prefetch}; systems: {', '.join(keys)}; worker logs in {log_dir}"
    )
    runner = Runner(args, config, rabbit, log)
    try:
        for run in range(1, args.runs + 1):
            for system in systems:
                log(f"run {run}/{args.runs}: {system.label}")
                record: dict[str, Any] = {"run": run, "system": system.key, "metrics": {}, "error": None}
                for attempt in (1, 2):
                    wait_quiet(log)
                    record["loadavg"] = os.getloadavg()
                    try:
                        record["metrics"] = runner.run_once(system)
                        record["error"] = None
                        break
                    except Exception as exc:
                        record["error"] = f"{type(exc).__name__}: {exc}"
                        log(f"  {system.key}: FAILED ({record['error']}); worker logs in {log_dir}")
                        if os.environ.get("BENCH_DEBUG"):
                            traceback.print_exc()
                        if attempt == 1:
                            log(f"  {system.key}: trying this run again")
                            time.sleep(5)
                            rabbit.close()
                results["runs"].append(record)
    except KeyboardInterrupt:
        log("interrupted: reporting the runs done so far")
    finally:
        for system in systems:
            try:
                system.close()
            except Exception as exc:
                log(f"closing {system.key}: {exc}")
    finished = datetime.now().astimezone()
    results["finished_at"] = finished.isoformat(timespec="seconds")
    results["duration_s"] = round((finished - started).total_seconds(), 1)
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["medians"] = report.medians(results["runs"])
    results["ratios"] = report.ratios(results["medians"])
    paths = report.write_all(results, args.out)
    print()
    print(report.markdown(results))
    log("wrote " + ", ".join(str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in paths))
    rabbit.close()
    return 1 if any(run["error"] for run in results["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
