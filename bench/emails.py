"""Email: Conveyor ``send_email`` jobs against a plain ``smtplib`` loop, to the same SMTP server.

Both send the shipped ``welcome`` template (text and HTML parts, rendered with Jinja2) to N
addresses, through an aiosmtpd server in the coordinator that timestamps every message:

- Conveyor: N jobs enqueued (``Client.enqueue_many``), then ``conveyor worker -p 1 -t 8
  --queues email`` drains them; the clock runs from the first message the server receives to
  the last one received or recorded (``finished_at``, whichever is later).
- baseline: a separate process of 8 threads, each on one reused ``smtplib.SMTP`` connection,
  renders the same template (compiled once) and sends; clocked the same way at the server.

Rate = (N − 1) ÷ (last − first). Runs on its own::

    python -m bench.emails --emails 200 --runs 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import smtplib
import socket
import subprocess
import sys
import threading
import time
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from bench.harness import (
    ROOT,
    BenchFailed,
    cpu_seconds,
    new_client,
    queue_outcomes,
    running_worker,
    sql_connect,
    wait_succeeded,
)
from bench.sections import Comparison

TEMPLATE = "welcome"
SENDER = "Conveyor <noreply@localhost>"
#: 7-bit transfer encodings and long header lines, as Conveyor's own messages have.
SMTP_POLICY = policy.SMTP.clone(cte_type="7bit", max_line_length=998)
#: Jobs per ``enqueue_many`` call when filling the backlog.
BATCH = 500


class CountingHandler:
    """aiosmtpd handler: the arrival time of every message, and how many sessions greeted."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.connections = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.arrivals.append(time.time())
        await asyncio.sleep(0)
        return "250 OK"


class SmtpSink:
    """A local aiosmtpd server on a free port, counting what it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.handler = CountingHandler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def reset(self) -> None:
        self.handler.arrivals = []
        self.handler.connections = 0

    def wait_for(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.handler.arrivals) < count:
            if time.monotonic() > deadline:
                raise BenchFailed(f"the SMTP server got {len(self.handler.arrivals)} of {count} emails")
            time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ the baseline ----


def smtplib_loop(port: int, count: int, threads: int) -> float:
    """``threads`` threads, one reused SMTP connection each, sending ``count`` emails between them;
    returns the CPU seconds this process spent sending."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FileSystemLoader(str(ROOT / "templates")),
        undefined=StrictUndefined,
        autoescape=select_autoescape(["html"]),
    )
    parts = [
        env.get_template(f"email/{TEMPLATE}/{name}") for name in ("subject.txt", "body.txt", "body.html")
    ]
    errors: list[BaseException] = []

    def send_share(first: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                for i in range(first, count, threads):
                    to = f"user{i}@example.com"
                    context = {"name": f"User {i}"}
                    subject, text, html = (part.render(context) for part in parts)
                    message = EmailMessage(policy=SMTP_POLICY)
                    message["From"], message["To"], message["Subject"] = SENDER, to, subject.strip()
                    message["Date"] = formatdate(usegmt=True)
                    message["Message-ID"] = make_msgid(domain="localhost")
                    message.set_content(text)
                    message.add_alternative(html, subtype="html")
                    smtp.send_message(message, "noreply@localhost", [to])
        except BaseException as exc:
            errors.append(exc)

    cpu_before = time.process_time()
    workers = [threading.Thread(target=send_share, args=(k,)) for k in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    if errors:
        raise errors[0]
    return time.process_time() - cpu_before


# ------------------------------------------------------------------ the section ----


class EmailSection:
    name = "email"
    title = "Email: `send_email` jobs vs a plain smtplib loop"

    def __init__(self, settings: dict[str, str], rabbit: Any, emails: int, threads: int = 8) -> None:
        self.settings = dict(settings)
        self.rabbit = rabbit
        self.emails = emails
        self.threads = threads
        self.queue = f"{settings['namespace']}.email"
        self.sink = SmtpSink()
        self.comparisons = [
            Comparison(
                "email",
                f"emails/s, 1 process × {threads} threads",
                "emails/s",
                f"conveyor worker -p 1 -t {threads} --queues email: send_email jobs from a backlog",
                f"one process, {threads} threads, one reused smtplib connection each; "
                "the same Jinja2 template rendered directly",
            )
        ]

    def config(self) -> dict[str, Any]:
        return {"emails": self.emails, "threads": self.threads, "template": TEMPLATE}

    def setup(self) -> None:
        self.sink.start()
        self.settings["smtp_url"] = f"smtp://127.0.0.1:{self.sink.port}"
        self.sql = sql_connect(self.settings["database_url"])

    def close(self) -> None:
        self.sink.stop()
        if hasattr(self, "sql"):
            self._reset()
            self.sql.close()

    def _reset(self) -> None:
        self.rabbit.purge([f"{self.queue}{suffix}" for suffix in ("", ".DQ", ".XQ")])
        self.sql.execute("DELETE FROM jobs WHERE queue = %s", (self.queue,))
        self.sink.reset()

    def measure(self, run: int) -> dict[str, float]:
        baseline, baseline_cpu, baseline_connections = self._baseline()
        conveyor, conveyor_cpu, conveyor_connections = self._conveyor()
        return {
            "email.conveyor": conveyor,
            "email.baseline": baseline,
            "conveyor_worker_cpu_ms_per_email": conveyor_cpu * 1000,
            "baseline_cpu_ms_per_email": baseline_cpu * 1000,
            "conveyor_smtp_connections": conveyor_connections,
            "baseline_smtp_connections": baseline_connections,
        }

    def _rate(self, end: float) -> float:
        arrivals = self.sink.handler.arrivals
        if len(arrivals) != self.emails:
            raise BenchFailed(f"the SMTP server got {len(arrivals)} emails, not {self.emails}")
        return (self.emails - 1) / max(end - min(arrivals), 1e-6)

    def _baseline(self) -> tuple[float, float, int]:
        """Emails per second, CPU seconds per email, SMTP connections."""
        self._reset()
        args = ["--smtplib-loop", str(self.sink.port), "--emails", str(self.emails)]
        done = subprocess.run(
            [sys.executable, "-m", "bench.emails", *args, "--threads", str(self.threads)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode:
            raise BenchFailed(f"the smtplib loop failed: {done.stderr.strip()[-500:]}")
        cpu = float(json.loads(done.stdout.strip().splitlines()[-1])["cpu_s"]) / self.emails
        self.sink.wait_for(self.emails, timeout=10)
        return self._rate(max(self.sink.handler.arrivals)), cpu, self.sink.handler.connections

    def _conveyor(self) -> tuple[float, float, int]:
        """Emails per second, worker CPU seconds per email (from the first email on), connections."""
        self._reset()
        with new_client(self.settings) as client:
            for first in range(0, self.emails, BATCH):
                payloads = [
                    {"to": f"user{i}@example.com", "template": TEMPLATE, "context": {"name": f"User {i}"}}
                    for i in range(first, min(first + BATCH, self.emails))
                ]
                client.enqueue_many("email", payloads)
        args = ("--processes", "1", "--threads", str(self.threads), "--queues", "email")
        with running_worker(self.settings, *args) as worker:
            self.sink.wait_for(1, timeout=60)
            # Start-up (imports, connections) is behind it: the CPU from here on is the emails'.
            cpu_before, sent_before = cpu_seconds(worker.pid), len(self.sink.handler.arrivals)
            last_finished = wait_succeeded(
                lambda: queue_outcomes(self.sql, self.queue), self.emails, worker, "email jobs"
            )
            cpu = (cpu_seconds(worker.pid) - cpu_before) / max(self.emails - sent_before, 1)
        end = max(last_finished, *self.sink.handler.arrivals)
        return self._rate(end), cpu, self.sink.handler.connections


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--smtplib-loop", type=int, metavar="PORT", help="run the baseline only, to PORT")
    args, rest = parser.parse_known_args(argv)
    if args.smtplib_loop:
        print(json.dumps({"cpu_s": smtplib_loop(args.smtplib_loop, args.emails, args.threads)}))
        return 0
    from bench.compare import main as compare_main

    return compare_main(["--only", "email", "--emails", str(args.emails), *rest])


if __name__ == "__main__":
    sys.exit(main())
