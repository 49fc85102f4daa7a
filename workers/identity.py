"""Who a worker process is, as recorded on every attempt."""

from __future__ import annotations

import os
import secrets
import socket

from jobs.store import WorkerIdentity


def current_identity() -> WorkerIdentity:
    """This process: ``host:pid:token`` (the token tells apart a pid reused after a restart)."""
    host = socket.gethostname()
    pid = os.getpid()
    return WorkerIdentity(worker_id=f"{host}:{pid}:{secrets.token_hex(3)}", host=host, pid=pid)
