"""A lone outbox relay that stops after RabbitMQ confirmed its first batch and before its commit
deletes the entries: ``python -m tests.outbox_relay`` (settings from ``CONVEYOR_*``).

It prints ``published N`` and sleeps, so that a test can kill it with SIGKILL exactly there,
the crash the outbox must survive without losing an entry.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import dramatiq

from jobs.broker import build_broker
from jobs.settings import Settings
from jobs.store import Database, JobStore
from jobs.store.outbox import OutboxStore
from workers.relay import Relay


def _stop_here(messages: list[dramatiq.Message[Any]]) -> None:
    print(f"published {len(messages)}", flush=True)
    time.sleep(600)


def main() -> None:
    settings = Settings.from_env(os.environ)
    db = Database(settings.database_url)
    relay = Relay(settings, build_broker(settings), OutboxStore(JobStore(db)), after_publish=_stop_here)
    print("relay ready", flush=True)
    relay.run()


if __name__ == "__main__":
    main()
    sys.exit(0)
