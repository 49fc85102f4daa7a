"""The three-node RabbitMQ cluster of scripts/rabbitmq-cluster.sh, driven from a test.

It runs beside the machine's own RabbitMQ (other ports, other node names, its own files), so a
test may kill its nodes without disturbing anyone else.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote
from urllib.request import Request, urlopen

from tests.helpers import ROOT

SCRIPT = ROOT / "scripts" / "rabbitmq-cluster.sh"
SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
NODES = ("a", "b", "c")
AMQP_PORTS = {"a": 5682, "b": 5683, "c": 5684}
API_PORTS = {"a": 15682, "b": 15683, "c": 15684}


@dataclass
class Cluster:
    """One cluster's directory; every method shells out to the script or asks the management API."""

    directory: Path
    #: Seconds the first ``start`` took.
    start_s: float = 0.0

    def run(self, *args: str, timeout: float = 240) -> str:
        """Run the script with ``args`` and this cluster's directory; its output."""
        done = subprocess.run(
            ["bash", str(SCRIPT), *args, str(self.directory)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmq-cluster.sh {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start(self) -> float:
        """Start whatever node is down (idempotent); seconds it took."""
        began = time.monotonic()
        self.run("start")
        return round(time.monotonic() - began, 1)

    def stop(self) -> None:
        self.run("stop")

    @property
    def broker_url(self) -> str:
        return ",".join(f"amqp://guest:guest@127.0.0.1:{AMQP_PORTS[n]}/%2F" for n in NODES)

    @property
    def api_url(self) -> str:
        return ",".join(f"http://guest:guest@127.0.0.1:{API_PORTS[n]}" for n in NODES)

    def kill(self, node: str) -> int:
        """SIGKILL one node's Erlang VM (never anything else); its pid."""
        pid = int(self.run("pid", node).strip())
        os.kill(pid, signal.SIGKILL)
        return pid

    def api(self, path: str, *, avoid: str | None = None) -> Any:
        """GET ``/api/<path>`` from the first node other than ``avoid`` that answers."""
        token = base64.b64encode(b"guest:guest").decode()
        error: OSError | None = None
        for node in NODES:
            if node == avoid:
                continue
            request = Request(f"http://127.0.0.1:{API_PORTS[node]}/api/{path}")
            request.add_header("Authorization", f"Basic {token}")
            try:
                with urlopen(request, timeout=10) as response:
                    return json.load(response)
            except OSError as exc:
                error = exc
        raise RuntimeError(f"no management API answers: {error}")

    def connections_by_node(self) -> Counter[str]:
        """Client connections per node (``a``, ``b``, ``c``), as the management API lists them."""
        return Counter(_short(item["node"]) for item in self.api("connections"))

    def queue_leader(self, queue: str) -> str:
        """The node (``a``, ``b``, ``c``) leading quorum queue ``queue``."""
        data = self.api(f"queues/%2F/{quote(queue, safe='')}")
        return _short(str(data.get("leader") or data.get("node")))


def _short(node: str) -> str:
    """``conveyor-a@localhost`` → ``a``."""
    return node.split("@", 1)[0].removeprefix("conveyor-")
