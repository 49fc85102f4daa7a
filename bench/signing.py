"""What signed messages cost: the same no-op work with and without ``CONVEYOR_SIGNING_KEY``.

A short, local measurement, apart from ``make bench``: for each mode (alternating, ``--runs``
times), N no-op jobs enqueued one at a time (``Client.enqueue``) and N with ``enqueue_many``,
workers stopped; then one ``conveyor worker -p 1 -t 8 --queues default`` drains the 2N jobs
(from its "ready" line to the last ``finished_at``). Beside it, the CPU of signing and verifying
one message, measured in this process. Medians are printed, as a Markdown table.

    .venv/bin/python -m bench.signing --jobs 2000 --runs 2

It uses a namespace and a database of its own (``conveyor_bench_signing``) on the local services.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import timeit
import uuid
from collections.abc import Callable
from typing import Any

import dramatiq

from bench.harness import ROOT, conveyor_env, new_client, prepare_database, queue_outcomes, sql_connect
from bench.systems.base import DEFAULT_AMQP_URL, DEFAULT_REDIS_URL
from bench.systems.rabbit import Rabbit
from jobs.signing import MessageSigner, SigningKey

DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_bench_signing"
KEY = "bench-signing-key-" + "0" * 32
BATCH = 500
READY_TIMEOUT = 60.0
DRAIN_TIMEOUT = 300.0


def settings(namespace: str, signed: bool) -> dict[str, str]:
    values = {
        "broker_url": DEFAULT_AMQP_URL,
        "database_url": DATABASE_URL,
        "redis_url": DEFAULT_REDIS_URL,
        "namespace": namespace,
    }
    return {**values, "signing_key": KEY} if signed else values


def rate(count: int, work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def one_run(jobs: int, signed: bool) -> dict[str, float]:
    """Enqueue rates and the drain rate of one mode, in a namespace of its own."""
    namespace = f"benchsign{os.getpid()}{uuid.uuid4().hex[:4]}"
    config = settings(namespace, signed)
    client = new_client(config)
    try:
        each = rate(jobs, lambda: [client.enqueue("noop") for _ in range(jobs)])
        bulk = rate(jobs, lambda: [client.enqueue_many("noop", [{}] * BATCH) for _ in range(jobs // BATCH)])
    finally:
        client.close()
    queue = f"{namespace}.default"
    try:
        drain = drain_rate(config, queue, jobs + (jobs // BATCH) * BATCH)
    finally:
        Rabbit(DEFAULT_AMQP_URL).delete([f"{queue}{suffix}" for suffix in ("", ".DQ", ".XQ")])
        with sql_connect(DATABASE_URL) as sql:
            sql.execute("DELETE FROM jobs WHERE queue LIKE %s", (f"{namespace}.%",))
    return {"enqueue": each, "enqueue_many": bulk, "drain": drain}


def drain_rate(config: dict[str, str], queue: str, total: int) -> float:
    """Jobs per second one worker process (8 threads) finishes the backlog at."""
    argv = [sys.executable, str(ROOT / "cli.py"), "worker", "-p", "1", "-t", "8", "--queues", "default"]
    worker = subprocess.Popen(
        argv, env=conveyor_env(config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        ready = _wait_ready(worker)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        with sql_connect(DATABASE_URL) as sql:
            while True:
                succeeded, failed, last = queue_outcomes(sql, queue)
                if failed:
                    raise RuntimeError(f"{failed} job(s) failed: is a message refused?")
                if succeeded >= total and last is not None:
                    return total / (last - ready)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {succeeded} of {total} jobs done")
                time.sleep(0.05)
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def _wait_ready(worker: subprocess.Popen[bytes]) -> float:
    """The wall-clock time the worker said it consumes (its " ready: " line)."""
    assert worker.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    for line in worker.stdout:
        if b" ready: " in line:
            ready = time.time()
            # Its log lines must keep flowing somewhere, or the worker blocks on a full pipe.
            threading.Thread(target=worker.stdout.read, daemon=True).start()
            return ready
        if time.monotonic() > deadline:
            break
    raise RuntimeError("the worker did not start")


def cpu_per_message() -> dict[str, float]:
    """Microseconds to sign, and to verify, a no-op message and an email-sized one."""
    signer = MessageSigner(SigningKey.of(KEY))
    context = {"name": "Ada Lovelace", "reset_url": "https://example.com/reset/" + "x" * 64}
    payloads = {
        "noop": {},
        "email": {"to": "ada@example.com", "template": "password_reset", "context": context},
    }
    figures: dict[str, float] = {}
    for name, payload in payloads.items():
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name="bench.default", actor_name="noop", args=(), kwargs=payload, options={"max_retries": 3}
        )
        signed = signer.sign(message)
        decoded = dramatiq.Message.decode(signed.encode())
        runs = 20000
        figures[f"sign {name}"] = (
            min(timeit.repeat(lambda m=message: signer.sign(m), number=runs, repeat=3)) / runs
        )
        figures[f"verify {name}"] = (
            min(timeit.repeat(lambda d=decoded: signer.verify(d), number=runs, repeat=3)) / runs
        )
    return {k: v * 1e6 for k, v in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per producer API (a multiple of 500)")
    parser.add_argument("--runs", type=int, default=2, help="runs of each mode (medians reported)")
    args = parser.parse_args()
    prepare_database(DATABASE_URL)
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for run in range(args.runs):
        for signed in (False, True) if run % 2 == 0 else (True, False):
            results[signed].append(one_run(args.jobs, signed))
            print(f"run {run + 1}, {'signed' if signed else 'unsigned'}: {results[signed][-1]}", flush=True)
    print("\n| jobs/s (median) | unsigned | signed | signed ÷ unsigned |\n|---|---|---|---|")
    for measure in ("enqueue", "enqueue_many", "drain"):
        off = statistics.median(r[measure] for r in results[False])
        on = statistics.median(r[measure] for r in results[True])
        print(f"| {measure} | {off:,.0f} | {on:,.0f} | {on / off:.2f} |")
    print("\n| CPU per message | µs |\n|---|---|")
    for name, micros in cpu_per_message().items():
        print(f"| {name} | {micros:.1f} |")


if __name__ == "__main__":
    main()
