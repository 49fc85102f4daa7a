"""Emails per second to a local SMTP server: one reused connection per thread vs one per message.

Runs a real `conveyor worker` (1 process × 8 threads) against RabbitMQ, PostgreSQL and an
in-process aiosmtpd server, once per mode, with the same backlog; times the deliveries.

    .venv/bin/python bench/email_smtp.py [--emails 400] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import prepare_database, running_worker

from jobs.email.message import Envelope, build_message
from jobs.email.templates import RenderedEmail
from jobs.email.transport import SmtpConfig, SmtpTransport
from jobs.settings import Settings
from producers import Client

DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/conveyor_bench"


class CountingHandler:
    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.connections = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ):
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.arrivals.append(time.monotonic())
        await asyncio.sleep(0)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_mode(reuse: bool, emails: int) -> dict[str, Any]:
    handler = CountingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    namespace = f"bench-{secrets.token_hex(3)}"
    smtp_url = f"smtp://127.0.0.1:{port}?reuse={'true' if reuse else 'false'}"
    settings = Settings(database_url=DATABASE_URL, namespace=namespace, smtp_url=smtp_url)
    with Client(settings) as client:
        for i in range(emails):
            client.send_email(f"user{i}@example.com", "welcome", {"name": f"User {i}"})
    worker_settings = {"database_url": DATABASE_URL, "namespace": namespace, "smtp_url": smtp_url}
    try:
        with running_worker(worker_settings, "--processes", "1", "--threads", "8", "--queues", "email"):
            deadline = time.monotonic() + 120
            while len(handler.arrivals) < emails and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        controller.stop()
    arrivals = sorted(handler.arrivals)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    return {
        "mode": "reuse" if reuse else "per-message",
        "emails": len(arrivals),
        "seconds": round(span, 3),
        "emails_per_second": round((len(arrivals) - 1) / span, 1),
        "smtp_connections": handler.connections,
    }


def run_transport(reuse: bool, emails: int, threads: int = 8) -> dict[str, Any]:
    """The SMTP part alone: ``threads`` threads sending through one SmtpTransport, no bookkeeping."""
    handler = CountingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    transport = SmtpTransport(SmtpConfig.from_url(f"smtp://127.0.0.1:{port}?reuse={str(reuse).lower()}"))
    envelope = Envelope(sender="bench@example.com", to=["user@example.com"])
    message = build_message("bench", envelope, RenderedEmail("Hi", "Hello\n" * 40, "<p>Hello</p>" * 40), [])
    per_thread = emails // threads

    def send_many() -> None:
        for _ in range(per_thread):
            transport.send(message, "bench@example.com", ["user@example.com"], lambda: None)

    started = time.perf_counter()
    workers = [threading.Thread(target=send_many) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed = time.perf_counter() - started
    transport.close()
    controller.stop()
    sent = per_thread * threads
    return {
        "mode": "reuse" if reuse else "per-message",
        "emails": sent,
        "seconds": round(elapsed, 3),
        "emails_per_second": round(sent / elapsed, 1),
        "smtp_connections": handler.connections,
    }


def print_table(title: str, results: list[dict[str, Any]]) -> float:
    ratio = float(results[0]["emails_per_second"]) / float(results[1]["emails_per_second"])
    print(title)
    print(f"  {'mode':<12} {'emails':>7} {'seconds':>8} {'emails/s':>9} {'connections':>12}")
    for r in results:
        print(
            f"  {r['mode']:<12} {r['emails']:>7} {r['seconds']:>8} {r['emails_per_second']:>9} "
            f"{r['smtp_connections']:>12}"
        )
    print(f"  connection reuse: {ratio:.2f}× the emails per second of a connection per message")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=400)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    prepare_database(DATABASE_URL)
    worker = [run_mode(True, args.emails), run_mode(False, args.emails)]
    transport = [run_transport(True, args.emails * 5), run_transport(False, args.emails * 5)]
    if args.json:
        print(json.dumps({"worker": worker, "transport": transport}, indent=2))
        return
    print_table("End to end: `conveyor worker`, 1 process x 8 threads, every job recorded", worker)
    print_table("SMTP transport alone: 8 threads, no job bookkeeping", transport)


if __name__ == "__main__":
    import faulthandler

    faulthandler.dump_traceback_later(int(os.environ.get("BENCH_WATCHDOG", "900")), exit=True)
    threading.current_thread().name = "bench"
    main()
