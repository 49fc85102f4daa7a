"""Real TLS listeners for the TLS tests: PostgreSQL, RabbitMQ and Redis, each started once per session.

Certificates come from ``trustme``: one CA signs a server certificate for ``localhost`` and
``127.0.0.1``; a second CA (``wrong_ca``) signs nothing, so trusting it must fail verification.

The services listen on the ports reserved for these tests, bound to 127.0.0.1, and live in a
temporary folder removed at the end (logs included): PostgreSQL 25432 (``hostssl`` only, a plain
connection is rejected), RabbitMQ AMQPS 5671 (no plain listener; node ``conveyor-tls@localhost``,
distribution port 25673, no plugins), Redis 6390 (TLS only). The ports are fixed, so the xdist
workers of a run share one set (:func:`running_tls_services`, under a file lock): the first starts
them, the last stops them. The tests using them are also in the ``tls`` xdist group, which
``--dist loadgroup`` sends to one worker where pytest-xdist honours it (xdist 3.8 under pytest 9.2
does not: it names items by a field pytest no longer reads).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pika
import pytest
import redis
import trustme

#: Below Linux's ephemeral range (32768–60999): no client socket of the machine can hold it.
PG_PORT = 25432
AMQPS_PORT = 5671
RABBITMQ_DIST_PORT = 25673
RABBITMQ_NODE = "conveyor-tls@localhost"
REDIS_PORT = 6390
#: Seconds a service may take to accept TLS connections.
STARTUP_TIMEOUT = 90.0
#: Attempts to bind a port that a dead session's server may still hold.
PORT_RETRIES = 20

#: Every test that uses the TLS services carries this mark: one xdist worker then starts them.
tls_group = pytest.mark.xdist_group("tls")


class ServiceStartError(RuntimeError):
    """A TLS service could not be started (a binary missing, or it never became ready)."""


@dataclass(frozen=True)
class Certificates:
    """PEM files: the right CA, a wrong CA, and the servers' certificate and key."""

    ca: Path
    wrong_ca: Path
    cert: Path
    key: Path
    #: A client certificate signed by the right CA (for mutual TLS), with its key in the same file.
    client: Path


def certificate_files(folder: Path) -> Certificates:
    """Where :func:`make_certificates` writes them."""
    return Certificates(
        ca=folder / "ca.pem",
        wrong_ca=folder / "wrong-ca.pem",
        cert=folder / "server.pem",
        key=folder / "server.key",
        client=folder / "client.pem",
    )


def make_certificates(folder: Path) -> Certificates:
    folder.mkdir(parents=True, exist_ok=True)
    ca, wrong = trustme.CA(), trustme.CA()
    # For the name the URLs use, not the address: a URL naming 127.0.0.1 must fail verification.
    server = ca.issue_cert("localhost")
    client = ca.issue_cert("conveyor-client@example.com")
    certs = certificate_files(folder)
    ca.cert_pem.write_to_path(str(certs.ca))
    wrong.cert_pem.write_to_path(str(certs.wrong_ca))
    # The full chain is the leaf alone here (trustme signs with the root directly).
    certs.cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(certs.key))
    client.private_key_and_cert_chain_pem.write_to_path(str(certs.client))
    for path in folder.iterdir():
        path.chmod(0o644)
    return certs


def _binary(pattern: str, package: str) -> str:
    found = sorted(glob.glob(pattern)) if "/" in pattern else [shutil.which(pattern) or ""]
    found = [path for path in found if path and os.access(path, os.X_OK)]
    if not found:
        raise ServiceStartError(
            f"{pattern} not found: install the Debian package {package} (scripts/ensure-system-packages.sh)"
        )
    return found[-1]


def _wait(ready: object, what: str, process: subprocess.Popen[bytes] | None, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            break
        try:
            ready()  # type: ignore[operator]
            return
        except Exception as exc:  # not ready yet: try again
            last = exc
            time.sleep(0.2)
    if not log.exists() and log.name != "stdout.log" and (log.parent.parent / "stdout.log").exists():
        log = log.parent.parent / "stdout.log"  # RabbitMQ stopped before it opened its own log
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise ServiceStartError(f"{what} did not become ready ({last!r}); its log ends with:\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the service's own process group, SIGKILL after 20 s."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


class TlsPostgres:
    """A throw-away PostgreSQL cluster with ``ssl=on`` that refuses plain TCP connections."""

    def __init__(self, folder: Path, certs: Certificates) -> None:
        self.folder = folder / "pg"
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.certs = certs
        self.bin = Path(_binary("/usr/lib/postgresql/*/bin/initdb", "postgresql")).parent
        # initdb refuses to run as root: the cluster belongs to the postgres user then.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str) -> None:
        completed = subprocess.run([*self.as_user, *args], capture_output=True, timeout=120, check=False)
        if completed.returncode != 0:
            output = (completed.stdout + completed.stderr).decode(errors="replace")[-2000:]
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise ServiceStartError(f"{Path(args[0]).name} failed: {output}\n{log}")

    def start(self) -> None:
        self.folder.mkdir(mode=0o700)
        if self.as_user:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        for source, name in ((self.certs.cert, "server.crt"), (self.certs.key, "server.key")):
            target = self.data / name
            shutil.copyfile(source, target)
            target.chmod(0o600)  # PostgreSQL refuses a key others may read
            if self.as_user:
                shutil.chown(target, "postgres", "postgres")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {PG_PORT}\n"
                f"unix_socket_directories = '{self.folder}'\nssl = on\n"
                "ssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 120\n"
            )
        # TLS or nothing: a connection without it is rejected, so a passing test proves TLS was used.
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n"
        )
        start = [
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "start",
        ]
        # A failed bind (EADDRINUSE: a dead session's server still going away) is tried again.
        for attempt in range(PORT_RETRIES):
            try:
                self._run(*start)
                return
            except ServiceStartError as exc:
                if "Address already in use" not in str(exc) or attempt == PORT_RETRIES - 1:
                    raise
                time.sleep(2)

    def url(self, database: str, ca: Path) -> str:
        return (
            f"postgresql+psycopg://postgres@localhost:{PG_PORT}/{database}"
            f"?sslmode=verify-full&sslrootcert={quote(str(ca))}"
        )

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(ServiceStartError, subprocess.TimeoutExpired):
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")


class TlsRabbitmq:
    """A RabbitMQ node of its own with an AMQPS listener only."""

    def __init__(self, folder: Path, certs: Certificates) -> None:
        self.folder = folder / "rabbitmq"
        self.log = self.folder / "log" / f"{RABBITMQ_NODE}.log"
        self.certs = certs
        self.server = _binary("/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server")
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        """Start the node without waiting (it takes seconds: other services start meanwhile)."""
        self.folder.mkdir()
        config = self.folder / "rabbitmq.conf"
        config.write_text(
            "listeners.tcp = none\n"
            f"listeners.ssl.default = 127.0.0.1:{AMQPS_PORT}\n"
            f"ssl_options.cacertfile = {self.certs.ca}\n"
            f"ssl_options.certfile = {self.certs.cert}\n"
            f"ssl_options.keyfile = {self.certs.key}\n"
            "ssl_options.verify = verify_peer\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
        )
        (self.folder / "enabled_plugins").write_text("[].\n")
        (self.folder / "rabbitmq-env.conf").write_text("")  # not the system's (it names the shared node)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.folder),  # a fresh Erlang cookie, not the shared node's
            "LANG": "C.UTF-8",
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": RABBITMQ_NODE,
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_CONFIG_FILE": str(config.with_suffix("")),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_DIST_PORT": str(RABBITMQ_DIST_PORT),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        with (self.folder / "stdout.log").open("wb") as out:
            self.process = subprocess.Popen(
                [self.server], env=env, cwd=self.folder, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def wait(self) -> None:
        def ready() -> None:
            parameters = pika.URLParameters(f"amqps://guest:guest@localhost:{AMQPS_PORT}/%2F")
            parameters.ssl_options = pika.SSLOptions(ssl.create_default_context(cafile=str(self.certs.ca)))
            pika.BlockingConnection(parameters).close()

        # Its own log says why a node stopped; its start-up script's output, why none began.
        log = self.log if self.log.exists() else self.folder / "stdout.log"
        _wait(ready, "RabbitMQ (TLS)", self.process, log)

    def url(self, ca: Path) -> str:
        return f"amqps://guest:guest@localhost:{AMQPS_PORT}/%2F?cafile={quote(str(ca))}"

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


class TlsRedis:
    """``redis-server`` with a TLS port only."""

    def __init__(self, folder: Path, certs: Certificates) -> None:
        self.folder = folder / "redis"
        self.log = self.folder / "redis.log"
        self.certs = certs
        self.server = _binary("redis-server", "redis-server")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir()
        arguments = [
            self.server, "--port", "0", "--tls-port", str(REDIS_PORT), "--bind", "127.0.0.1",
            "--tls-cert-file", str(self.certs.cert), "--tls-key-file", str(self.certs.key),
            "--tls-ca-cert-file", str(self.certs.ca), "--tls-auth-clients", "no",
            "--save", "", "--appendonly", "no", "--dir", str(self.folder), "--logfile", str(self.log),
        ]  # fmt: skip
        self.process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, start_new_session=True)

        def ready() -> None:
            client = redis.Redis.from_url(self.url(self.certs.ca), socket_connect_timeout=2)
            try:
                client.ping()
            finally:
                client.close()

        _wait(ready, "Redis (TLS)", self.process, self.log)

    def url(self, ca: Path, db: int = 0) -> str:
        return f"rediss://localhost:{REDIS_PORT}/{db}?ssl_ca_certs={quote(str(ca))}"

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


@dataclass(frozen=True)
class TlsServices:
    """The running TLS services of this session and the certificates they use."""

    folder: Path
    certs: Certificates
    postgres: TlsPostgres
    rabbitmq: TlsRabbitmq
    redis: TlsRedis


#: The running services' folder and the test sessions (pids) using them. Every xdist worker of a
#: run shares one set (the ports are fixed); the last session to leave stops them, and a session
#: that finds only dead users (killed before its clean-up) stops their leftovers first.
STATE = Path(tempfile.gettempdir()) / f"conveyor-tls-services-{os.getuid()}.json"
LOCK = STATE.with_suffix(".lock")


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_state() -> dict[str, Any]:
    try:
        state = json.loads(STATE.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _is_python(pid: int) -> bool:
    try:
        return b"python" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _mentions(pid: int, folder: str) -> bool:
    """Whether process ``pid`` belongs to the services in ``folder`` (its command line, environment
    or working directory names the folder), so that only our own processes are ever stopped.
    epmd is left alone: a node starts it when none runs, and the shared RabbitMQ relies on it."""
    proc, marker = Path(f"/proc/{pid}"), f"{folder.rstrip('/')}/".encode()
    try:
        if (proc / "comm").read_text().strip() == "epmd":
            return False
        texts = [(proc / "cmdline").read_bytes(), (proc / "environ").read_bytes()]
        texts.append(os.readlink(proc / "cwd").encode() + b"/")
    except OSError:
        return False
    return any(marker in text for text in texts)


def _stop_all(folder: Path) -> None:
    """Stop every service living in ``folder`` (PostgreSQL by pg_ctl, the rest by signal), then
    remove the folder."""
    if (folder / "pg" / "data" / "postmaster.pid").exists():
        TlsPostgres(folder, certificate_files(folder / "certs")).stop()
    mine = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and int(p.name) != os.getpid()]
    mine = [pid for pid in mine if _mentions(pid, str(folder))]
    for signum, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        for pid in mine:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        deadline = time.monotonic() + grace
        while (mine := [pid for pid in mine if _running(pid)]) and time.monotonic() < deadline:
            time.sleep(0.1)
    shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs (a child of this process that exited is reaped here)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _describe(folder: Path) -> TlsServices:
    certs = certificate_files(folder / "certs")
    return TlsServices(
        folder, certs, TlsPostgres(folder, certs), TlsRabbitmq(folder, certs), TlsRedis(folder, certs)
    )


#: The service processes this session started: kept referenced for as long as it runs, as other
#: sessions may still use them when it ends (they are reaped, or left to init, never collected
#: as "still running").
_STARTED: list[subprocess.Popen[bytes]] = []


def _start() -> TlsServices:
    """Start PostgreSQL, RabbitMQ and Redis with TLS in a new folder (all stopped on a failure)."""
    folder = Path(tempfile.mkdtemp(prefix="conveyor-tls-"))
    folder.chmod(0o755)  # the postgres user must reach its cluster's folder
    make_certificates(folder / "certs")
    services = _describe(folder)
    try:
        services.rabbitmq.launch()  # the slowest: it boots while the others start
        services.postgres.start()
        services.redis.start()
        services.rabbitmq.wait()
    except BaseException:
        _stop_all(folder)
        raise
    finally:
        _STARTED.extend(p for p in (services.rabbitmq.process, services.redis.process) if p is not None)
    return services


@contextlib.contextmanager
def running_tls_services() -> Iterator[TlsServices]:
    """PostgreSQL, RabbitMQ and Redis with TLS, started by the first session that asks (the others
    wait for it, then share them) and stopped when the last one leaves, even on failure."""
    with _locked():
        state = _read_state()
        users = [pid for pid in state.get("users", []) if pid != os.getpid() and _is_python(pid)]
        folder = Path(state.get("folder", "/nonexistent"))
        if users and folder.is_dir():
            services = _describe(folder)
        else:
            if state.get("folder"):
                _stop_all(folder)  # left by sessions that were killed before their clean-up
            services = _start()
        STATE.write_text(json.dumps({"folder": str(services.folder), "users": [*users, os.getpid()]}))
    try:
        yield services
    finally:
        with _locked():
            state = _read_state()
            users = [pid for pid in state.get("users", []) if pid != os.getpid() and _is_python(pid)]
            if users:
                STATE.write_text(json.dumps({**state, "users": users}))
            else:
                _stop_all(services.folder)
                STATE.unlink(missing_ok=True)
                for process in _STARTED:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(5)
