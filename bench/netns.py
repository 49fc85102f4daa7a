"""Hosts of their own on one machine: network namespaces joined to the host by veth pairs.

Each :class:`NamespaceHost` is a network namespace with one veth pair (``10.231.K.4N+2/30``
inside, ``…+1/30`` on the host side), its own host name (a UTS namespace per process started in
it), and a ``socat`` forwarder per service on the host-side address, because PostgreSQL, Redis
and RabbitMQ listen on 127.0.0.1 only. A replica started in it reaches the services the way a
replica on another machine would: through its own network stack and an address of its own.

Needs root (``ip netns``, ``ip link``) and ``socat``; :func:`unavailable` says why not.
Everything made is removed by :meth:`NamespaceHost.remove` (also after a failure), and
:func:`remove_stale` clears what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from jobs.defaults import DEFAULT_BROKER_URL, DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL

#: Every namespace this module makes starts with this, so that stale ones can be found.
PREFIX = "cvh"
#: The services' URLs when a variable is unset (those of jobs.defaults).
SERVICE_DEFAULTS = {
    "CONVEYOR_BROKER_URL": DEFAULT_BROKER_URL,
    "CONVEYOR_DATABASE_URL": DEFAULT_DATABASE_URL,
    "CONVEYOR_REDIS_URL": DEFAULT_REDIS_URL,
}


def unavailable() -> str | None:
    """Why namespace hosts cannot be made here (``None``: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "socat", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = f"{PREFIX}probe{os.getpid() % 10000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _used_prefixes() -> set[int]:
    """Third octets of 10.231.x.y addresses already on this machine's host side."""
    shown = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=False).stdout
    return {int(word.split(".")[2]) for word in shown.split() if word.startswith("10.231.")}


def free_block() -> int:
    """A third octet K whose ``10.231.K.0/24`` no interface uses (each run of hosts takes one)."""
    used = _used_prefixes()
    free = [k for k in range(1, 255) if k not in used]
    if not free:
        raise RuntimeError("no free 10.231.K.0/24 block for namespace hosts")
    return random.choice(free)


@dataclass
class NamespaceHost:
    """One namespace host: ``name`` (namespace and host name), its addresses and forwarders."""

    block: int
    index: int
    token: str
    forwarders: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.token}x{self.index}"

    @property
    def hostname(self) -> str:
        return f"conveyor-host-{self.index}"

    @property
    def host_address(self) -> str:
        """The host side's address: where the forwarders listen."""
        return f"10.231.{self.block}.{4 * self.index + 1}"

    @property
    def address(self) -> str:
        """The namespace's own address."""
        return f"10.231.{self.block}.{4 * self.index + 2}"

    def create(self, ports: Sequence[int]) -> None:
        """Make the namespace and its veth pair, and forward ``ports`` from the host-side address
        to 127.0.0.1."""
        outside, inside = f"{self.name}h", f"{self.name}n"
        _ip("netns", "add", self.name)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", self.name)
        _ip("addr", "add", f"{self.host_address}/30", "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("-n", self.name, "addr", "add", f"{self.address}/30", "dev", inside)
        _ip("-n", self.name, "link", "set", inside, "up")
        _ip("-n", self.name, "link", "set", "lo", "up")
        for port in ports:
            self.forwarders.append(
                subprocess.Popen(
                    [
                        "socat",
                        f"TCP-LISTEN:{port},bind={self.host_address},fork,reuseaddr,nodelay",
                        f"TCP:127.0.0.1:{port},nodelay",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        _await_listening(self.host_address, ports)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace under this host's own host name (the pid of the
        process started is ``argv``'s own: ``ip netns exec``, ``unshare`` and ``sh`` exec)."""
        script = f'hostname {self.hostname} && exec "$@"'
        return ["ip", "netns", "exec", self.name, "unshare", "--uts", "sh", "-c", script, "sh", *argv]

    def remove(self) -> None:
        """Stop the forwarders, delete the namespace (its veth pair goes with it)."""
        for forwarder in self.forwarders:
            with contextlib.suppress(ProcessLookupError):
                forwarder.send_signal(signal.SIGTERM)
        for forwarder in self.forwarders:
            try:
                forwarder.wait(timeout=5)
            except subprocess.TimeoutExpired:
                forwarder.kill()
                forwarder.wait()
        self.forwarders.clear()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", f"{self.name}h"], capture_output=True, check=False)

    def rewrite(self, url: str) -> str:
        """``url`` with its 127.0.0.1 (or localhost) host replaced by the host-side address."""
        parts = urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost"):
            return url
        netloc = parts.netloc.rsplit("@", 1)
        hostport = netloc[-1].replace(parts.hostname, self.host_address, 1)
        return urlunsplit(parts._replace(netloc="@".join([*netloc[:-1], hostport])))

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` with every ``CONVEYOR_*_URL`` pointed at this host's forwarders (the services'
        default URLs filled in first: inside the namespace, 127.0.0.1 is the namespace's own)."""
        filled = {**SERVICE_DEFAULTS, **base}
        return {
            key: self.rewrite(value) if key.startswith("CONVEYOR_") and key.endswith("_URL") else value
            for key, value in filled.items()
        }


def _await_listening(address: str, ports: Sequence[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                socket.create_connection((address, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"forwarder on {address}:{port} does not answer") from None
                time.sleep(0.05)


@contextlib.contextmanager
def namespace_hosts(count: int, ports: Sequence[int]) -> Iterator[list[NamespaceHost]]:
    """``count`` namespace hosts forwarding ``ports``; all removed on exit, whatever happened."""
    token = str(os.getpid())
    block = free_block()
    hosts = [NamespaceHost(block, index, token) for index in range(1, count + 1)]
    try:
        for host in hosts:
            host.create(ports)
        yield hosts
    finally:
        for host in hosts:
            host.remove()


def remove_stale() -> list[str]:
    """Delete namespaces of this module whose creating process is gone; their names."""
    removed = []
    for line in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False
    ).stdout.split("\n"):
        name = line.split(" ", 1)[0]
        owner = name.removeprefix(PREFIX).partition("x")[0]
        if not name.startswith(PREFIX) or not owner.isdigit():
            continue
        if not Path(f"/proc/{owner}").exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
            subprocess.run(["ip", "link", "del", f"{name}h"], capture_output=True, check=False)
            removed.append(name)
    return removed
