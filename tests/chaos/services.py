"""Disrupt the shared services on loopback — and always bring them back.

Each context manager stops (or restarts) one service the way ``scripts/ensure-services.sh``
runs it on this machine, and restores it in a ``finally``: RabbitMQ with ``rabbitmqctl
stop_app`` / ``start_app``, PostgreSQL with ``pg_ctlcluster … stop`` / ``start``, Redis with
``SHUTDOWN NOSAVE`` and the very ``redis-server`` command line of ``ensure-services.sh``.
Each waits until its service answers again and yields an :class:`Outage` telling how long
the service was down.

While a service is disrupted, ``/tmp/chaos.lock`` holds the pid of the test process, so
that other engineers on the machine know not to run tests at that moment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pika
import pika.exceptions
import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger("conveyor.chaos")

ROOT = Path(__file__).resolve().parents[2]
ENSURE_SERVICES = ROOT / "scripts" / "ensure-services.sh"
LOCK = Path("/tmp/chaos.lock")

HOST = "127.0.0.1"
AMQP_PORT = 5672
PG_PORT = 5432
REDIS_PORT = 6379
AMQP_URL = f"amqp://guest:guest@{HOST}:{AMQP_PORT}/%2F"
PG_DSN = f"host={HOST} port={PG_PORT} user=postgres dbname=postgres connect_timeout=2"

#: Seconds to wait for a service to answer again after it was started.
RABBIT_TIMEOUT = 90.0
PG_TIMEOUT = 30.0
REDIS_TIMEOUT = 10.0

# rabbitmqctl, pg_ctlcluster & co. live in /usr/sbin, which a non-root PATH may lack.
_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


@dataclass
class Outage:
    """One disruption of one service: when it began, when the service answered again."""

    service: str
    began: float = field(default_factory=time.monotonic)
    restored: float | None = None
    #: Wall-clock time at which the service answered again (compared with the store's timestamps).
    restored_at: datetime | None = None

    @property
    def down_for(self) -> float:
        """Seconds from the start of the disruption until the service answered again (so far)."""
        return (self.restored if self.restored is not None else time.monotonic()) - self.began

    def mark_restored(self) -> None:
        self.restored = time.monotonic()
        self.restored_at = datetime.now(UTC)
        logger.warning("chaos: %s answers again after %.1f s down", self.service, self.down_for)
        print(f"chaos: {self.service} was down for {self.down_for:.1f} s", flush=True)

    def as_dict(self) -> dict[str, object]:
        return {"service": self.service, "down_s": round(self.down_for, 2)}


# ----------------------------------------------------------------- lock ----


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_holder() -> int | None:
    try:
        return int(LOCK.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def chaos_lock() -> Iterator[None]:
    """Hold ``/tmp/chaos.lock`` (our pid inside) while a service is disrupted.

    Re-entrant within this process. Refuses to disrupt anything while another live
    process holds the lock.
    """
    holder = _lock_holder()
    if holder == os.getpid():
        yield
        return
    if holder is not None and _pid_alive(holder):
        raise RuntimeError(f"{LOCK} is held by pid {holder}: another chaos run disrupts the services")
    LOCK.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        release_lock()


def release_lock() -> None:
    """Remove the lock file when this process holds it."""
    if _lock_holder() == os.getpid():
        LOCK.unlink(missing_ok=True)


# --------------------------------------------------------------- probes ----


def _run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    executable = shutil.which(argv[0], path=_PATH) or argv[0]
    result = subprocess.run(
        [executable, *argv[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PATH": _PATH},
    )
    if result.returncode != 0:
        output = f"{result.stdout.strip()} {result.stderr.strip()}".strip()
        raise RuntimeError(f"{' '.join(argv)} exited with {result.returncode}: {output}")
    return result


def tcp_open(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def rabbitmq_answers() -> bool:
    """AMQP port open and a pika connection opens."""
    if not tcp_open(AMQP_PORT):
        return False
    params = pika.URLParameters(f"{AMQP_URL}?connection_attempts=1&socket_timeout=2")
    try:
        pika.BlockingConnection(params).close()
    except (pika.exceptions.AMQPError, OSError):
        return False
    return True


def postgres_answers() -> bool:
    try:
        with psycopg.connect(PG_DSN) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _redis(timeout: float) -> redis.Redis:
    # No retries: redis-py's default retries with backoff would blur the timings.
    return redis.Redis(
        host=HOST,
        port=REDIS_PORT,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def redis_answers() -> bool:
    client = _redis(1.0)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _wait_until(name: str, probe: Callable[[], bool], timeout: float, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{name} did not answer within {timeout:g} s")
        time.sleep(interval)


# ------------------------------------------------------------- RabbitMQ ----


def _rabbitmq_start_app() -> None:
    _run("rabbitmqctl", "start_app")
    _wait_until("RabbitMQ", rabbitmq_answers, RABBIT_TIMEOUT)


@contextlib.contextmanager
def rabbitmq_stopped() -> Iterator[Outage]:
    """RabbitMQ's application stopped (``rabbitmqctl stop_app``; the Erlang node stays up).

    Durable queues and persistent messages survive. On exit ``rabbitmqctl start_app``, then
    wait until port 5672 accepts and a pika connection opens.
    """
    with chaos_lock():
        outage = Outage("RabbitMQ")
        logger.warning("chaos: stopping RabbitMQ (rabbitmqctl stop_app)")
        try:
            _run("rabbitmqctl", "stop_app")
            yield outage
        finally:
            _rabbitmq_start_app()
            outage.mark_restored()


def restart_rabbitmq(down_for: float = 5.0) -> Outage:
    """Stop RabbitMQ's application, keep it down ``down_for`` seconds, start it again."""
    with rabbitmq_stopped() as outage:
        time.sleep(max(0.0, down_for - outage.down_for))
    return outage


# ----------------------------------------------------------- PostgreSQL ----


def postgres_version() -> str:
    """The cluster version ensure-services.sh uses: the newest under /etc/postgresql."""
    versions = sorted(
        (p.name for p in Path("/etc/postgresql").iterdir() if (p / "main").is_dir()),
        key=lambda v: [int(x) if x.isdigit() else 0 for x in v.split(".")],
    )
    if not versions:
        raise RuntimeError("no PostgreSQL cluster under /etc/postgresql")
    return versions[-1]


def _pg_ctlcluster(action: str, *extra: str) -> None:
    _run("pg_ctlcluster", "--skip-systemctl-redirect", postgres_version(), "main", action, *extra)


@contextlib.contextmanager
def postgres_restarted(down_for: float = 0.0) -> Iterator[Outage]:
    """PostgreSQL's cluster stopped (fast mode: every connection is cut), kept down for the
    ``with`` body (and at least ``down_for`` seconds), then started again; wait until it
    accepts connections."""
    with chaos_lock():
        outage = Outage("PostgreSQL")
        logger.warning("chaos: stopping PostgreSQL (pg_ctlcluster stop -m fast)")
        try:
            _pg_ctlcluster("stop", "-m", "fast")
            yield outage
            time.sleep(max(0.0, down_for - outage.down_for))
        finally:
            if not postgres_answers():
                _pg_ctlcluster("start")
            _wait_until("PostgreSQL", postgres_answers, PG_TIMEOUT)
            outage.mark_restored()


# ---------------------------------------------------------------- Redis ----


def start_redis() -> None:
    """Start Redis exactly as ensure-services.sh does; wait for PONG."""
    Path("/var/lib/redis").mkdir(parents=True, exist_ok=True)
    Path("/var/log/redis").mkdir(parents=True, exist_ok=True)
    _run(
        "redis-server",
        "--daemonize",
        "yes",
        "--bind",
        "127.0.0.1",
        "-::1",
        "--port",
        str(REDIS_PORT),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        "/var/lib/redis",
        "--logfile",
        "/var/log/redis/ci.log",
    )
    _wait_until("Redis", redis_answers, REDIS_TIMEOUT)


@contextlib.contextmanager
def redis_stopped() -> Iterator[Outage]:
    """Redis shut down (``SHUTDOWN NOSAVE``) for the ``with`` body; started again on exit."""
    with chaos_lock():
        outage = Outage("Redis")
        logger.warning("chaos: stopping Redis (SHUTDOWN NOSAVE)")
        try:
            client = _redis(5.0)
            with contextlib.suppress(redis.ConnectionError):  # the server hangs up as it goes
                client.shutdown(nosave=True)
            client.close()
            _wait_until("Redis to stop", lambda: not tcp_open(REDIS_PORT), 10)
            yield outage
        finally:
            if not redis_answers():
                start_redis()
            outage.mark_restored()


# -------------------------------------------------------------- restore ----


def restore_all() -> None:
    """Make sure all three services answer, whatever a test left behind.

    RabbitMQ's node may be up with its application stopped, which ensure-services.sh
    would wait on forever: start the application first, then run the script.
    """
    if not tcp_open(AMQP_PORT):
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _rabbitmq_start_app()
    subprocess.run(["bash", str(ENSURE_SERVICES)], check=True, timeout=300, env={**os.environ, "PATH": _PATH})
    release_lock()


# ------------------------------------------------- RabbitMQ settings ----


def rabbitmq_get_env(key: str) -> int | str | None:
    """``application:get_env(rabbit, KEY)`` on the running node: an int, a string, or None (unset)."""
    answer = _run("rabbitmqctl", "eval", f"application:get_env(rabbit, {key}).").stdout.strip()
    if answer == "undefined":
        return None
    if not (answer.startswith("{ok,") and answer.endswith("}")):
        raise RuntimeError(f"unexpected answer from rabbitmqctl eval: {answer!r}")
    value = answer.removeprefix("{ok,").removesuffix("}").strip()
    return int(value) if value.lstrip("-").isdigit() else value


@contextlib.contextmanager
def rabbitmq_setting(key: str, value: int) -> Iterator[int | str | None]:
    """RabbitMQ's ``rabbit`` application setting ``key`` set to ``value`` (an integer) for the
    ``with`` body; yields the previous value (None: it was unset) and restores it on exit.

    ``application:set_env`` changes the running node only; what reads the setting when it
    starts (e.g. a channel, for ``consumer_timeout``) sees the new value from then on.
    """
    with chaos_lock():
        previous = rabbitmq_get_env(key)
        logger.warning("chaos: RabbitMQ %s %s -> %s", key, previous, value)
        _run("rabbitmqctl", "eval", f"application:set_env(rabbit, {key}, {int(value)}).")
        try:
            yield previous
        finally:
            if previous is None:
                _run("rabbitmqctl", "eval", f"application:unset_env(rabbit, {key}).")
            else:  # an integer, or an Erlang term as rabbitmqctl printed it
                _run("rabbitmqctl", "eval", f"application:set_env(rabbit, {key}, {previous}).")
            logger.warning("chaos: RabbitMQ %s restored to %s", key, previous)
