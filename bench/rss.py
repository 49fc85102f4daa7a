"""Worker memory over a long run: RSS of a `conveyor worker` after 10k and after 100k no-op jobs.

    .venv/bin/python -m bench.rss [--processes 2] [--threads 8]

Not part of `make bench` (a long run). Uses the database `conveyor_bench` and a fresh namespace;
the RSS is VmRSS summed over the worker processes (the supervisor excluded), read once each
backlog is drained.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    compile_conveyor,
    new_client,
    prepare_database,
    queue_outcomes,
    running_worker,
    sql_connect,
)

DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_bench"
STEPS = (10_000, 90_000)


def worker_rss_mib(supervisor_pid: int) -> float:
    children = subprocess.run(["pgrep", "-P", str(supervisor_pid)], capture_output=True, text=True).stdout
    total_kib = 0
    for pid in children.split():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total_kib += int(line.split()[1])
    return total_kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    prepare_database(DATABASE_URL)
    compile_conveyor()
    namespace = f"rss{uuid.uuid4().hex[:6]}"
    settings = {"database_url": DATABASE_URL, "namespace": namespace}
    queue = f"{namespace}.default"
    with new_client(settings) as client, sql_connect(DATABASE_URL) as sql:

        def succeeded() -> int:
            return queue_outcomes(sql, queue)[0]

        with running_worker(settings, "-p", str(args.processes), "-t", str(args.threads)) as worker:
            time.sleep(3)
            target = 0
            readings = []
            for step in STEPS:
                for _ in range(0, step, 5000):
                    client.enqueue_many("noop", [{}] * 5000)
                target += step
                started = time.monotonic()
                while succeeded() < target:
                    time.sleep(0.5)
                readings.append(worker_rss_mib(worker.pid))
                print(
                    f"after {target:,} jobs: worker RSS {readings[-1]:.1f} MiB "
                    f"({step / (time.monotonic() - started):.0f} jobs/s)",
                    flush=True,
                )
    print(f"RSS after {target:,} ÷ after {STEPS[0]:,}: {readings[-1] / readings[0]:.2f}×")


if __name__ == "__main__":
    main()
