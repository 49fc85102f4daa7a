"""A small Redis client for the worker registry, the only Redis work every worker process does.

A worker process writes its registry entry (a hash and its TTL, in one MULTI/EXEC), reads the
registry (SCAN, then HGETALL in a pipeline) and deletes entries. redis-py can do all of that,
but ``import redis`` (version 8) loads its asyncio and cluster clients, every command mixin and
OpenTelemetry's metrics SDK: 8.7 MiB in each worker process, a sixth of a process serving no-op
jobs (``docs/performance/index.md``). This speaks those few commands in RESP2 over one socket,
with the connection options of redis-py's URLs that Conveyor documents. redis-py stays for
everything else (the email rate limit, the report cache, the CLI), imported where it is used.

:func:`registry_client` picks this client, or redis-py for a URL option it does not know.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import parse_qsl, unquote, urlsplit

from jobs.defaults import DEFAULT_REDIS_TIMEOUT
from jobs.errors import RegistryUnavailable
from jobs.settings import mask_url

if TYPE_CHECKING:
    import redis

    #: What the registry's readers and writers take: this client, or redis-py's.
    RegistryClient: TypeAlias = "LiteRedis | redis.Redis"

#: URL query options understood here; a URL with any other goes to redis-py.
KNOWN_OPTIONS = frozenset(
    {"db", "password", "username"}
    | {"ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname"}
)
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_FALSE = ("0", "false", "no", "off")
#: What a broken or unusable connection raises (TLS errors are OSErrors; a garbled reply a
#: ValueError; a closed connection, here, an EOFError).
_BROKEN = (OSError, ValueError, EOFError)


class ReplyError(RegistryUnavailable):
    """Redis answered a command with an error (``WRONGTYPE …``, ``NOAUTH …``)."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect, from a ``redis://``, ``rediss://`` or ``unix://`` URL."""

    host: str
    port: int
    path: str | None
    db: int
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None


def parse_url(url: str) -> Endpoint | None:
    """The endpoint of ``url`` as redis-py's ``from_url`` reads it; None when the URL has an
    option this client does not know (the caller then uses redis-py)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    if parts.scheme not in ("redis", "rediss", "unix") or set(query) - KNOWN_OPTIONS:
        return None
    db = query.get("db") or (parts.path.lstrip("/") if parts.scheme != "unix" else "") or "0"
    return Endpoint(
        host=parts.hostname or "localhost",
        port=parts.port or 6379,
        path=unquote(parts.path) if parts.scheme == "unix" else None,
        db=int(db),
        username=unquote(parts.username) if parts.username else query.get("username"),
        password=unquote(parts.password) if parts.password else query.get("password"),
        tls=_tls_context(query) if parts.scheme == "rediss" else None,
    )


def _tls_context(query: Mapping[str, str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=query.get("ssl_ca_certs"))
    required = _CERT_REQS[query.get("ssl_cert_reqs", "required").lower()]
    context.check_hostname = required == ssl.CERT_REQUIRED and (
        query.get("ssl_check_hostname", "true").lower() not in _FALSE
    )
    context.verify_mode = required
    if query.get("ssl_certfile"):
        context.load_cert_chain(query["ssl_certfile"], query.get("ssl_keyfile"))
    return context


def redis_client(url: str, timeout: float = DEFAULT_REDIS_TIMEOUT) -> redis.Redis:
    """A redis-py client with short timeouts: Redis is an aid, never a reason to stall jobs or
    commands. redis-py is imported here, by the first caller that needs it."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def registry_client(url: str, timeout: float = DEFAULT_REDIS_TIMEOUT) -> RegistryClient:
    """A client for the worker registry at ``url``: :class:`LiteRedis`, or redis-py's when the
    URL has options only redis-py knows."""
    endpoint = parse_url(url)
    if endpoint is None:
        return redis_client(url, timeout)
    return LiteRedis(endpoint, timeout, mask_url(url))


def _command(*args: Any) -> bytes:
    """One command in RESP's array-of-bulk-strings form."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode("utf-8")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class LiteRedis:
    """One connection to Redis, opened on first use and again after an error; thread-safe (one
    command or pipeline at a time).

    Every failure raises :class:`~jobs.errors.RegistryUnavailable`, chained to its cause (a
    failed certificate check stays findable by :func:`jobs.tls.certificate_failure`).
    """

    def __init__(self, endpoint: Endpoint, timeout: float, masked_url: str) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.masked_url = masked_url
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._reader: Any = None

    def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send ``commands`` at once and return their replies in order (an error reply as a
        :class:`ReplyError` in its place).

        A connection that broke while idle (Redis restarted, or closed it) is found broken only
        when used: the commands are then sent once more on a new one. Every command the
        registry sends may be repeated (HSET of the same fields, EXPIRE, DEL, SCAN, HGETALL).
        """
        payload = b"".join(_command(*command) for command in commands)
        with self._lock:
            again = self._sock is not None  # only a connection made earlier gets a second try
            while True:
                try:
                    return self._round_trip(payload, len(commands))
                except _BROKEN as exc:
                    self._drop()
                    if not again or isinstance(exc, TimeoutError):
                        raise self._unavailable(exc) from exc
                    again = False

    def _round_trip(self, payload: bytes, replies: int) -> list[Any]:
        if self._sock is None:
            self._connect()
        assert self._sock is not None
        self._sock.sendall(payload)
        return [self._reply() for _ in range(replies)]

    def ping(self) -> bool:
        reply: bytes = _checked(self.execute([("PING",)])[0])
        return reply == b"PONG"

    def delete(self, *keys: str) -> int:
        return int(_checked(self.execute([("DEL", *keys)])[0]))

    def hgetall(self, key: str | bytes) -> dict[bytes, bytes]:
        return _as_hash(_checked(self.execute([("HGETALL", key)])[0]))

    def scan_iter(self, match: str, count: int = 500) -> Iterator[bytes]:
        """Every key matching ``match``, SCAN by SCAN (each key once at least, as SCAN promises)."""
        cursor = b"0"
        while True:
            cursor, keys = _checked(self.execute([("SCAN", cursor, "MATCH", match, "COUNT", count)])[0])
            yield from keys
            if cursor == b"0":
                return

    def pipeline(self, transaction: bool = True) -> Pipeline:
        return Pipeline(self, transaction)

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _unavailable(self, exc: BaseException) -> RegistryUnavailable:
        return RegistryUnavailable(f"Redis at {self.masked_url}: {exc or type(exc).__name__}")

    def _connect(self) -> None:
        where = self.endpoint
        if where.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(where.path)
        else:
            sock = socket.create_connection((where.host, where.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if where.tls is not None:
            sock = where.tls.wrap_socket(sock, server_hostname=where.host)
        self._sock, self._reader = sock, sock.makefile("rb")
        hello: list[tuple[Any, ...]] = []
        if where.password is not None:
            user = (where.username,) if where.username else ()
            hello.append(("AUTH", *user, where.password))
        if where.db:
            hello.append(("SELECT", where.db))
        try:
            if hello:
                sock.sendall(b"".join(_command(*command) for command in hello))
                for _ in hello:
                    _checked(self._reply())
        except BaseException:
            self._drop()  # never left half set up: a refused AUTH, a wrong database number
            raise

    def _drop(self) -> None:
        sock, self._sock, self._reader = self._sock, None, None
        if sock is not None:
            sock.close()

    def _reply(self) -> Any:
        """One RESP2 reply: bytes, int, None, a list, or a :class:`ReplyError`."""
        line = self._reader.readline()
        if not line.endswith(b"\r\n"):
            raise EOFError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            return ReplyError(f"Redis at {self.masked_url}: {rest.decode('utf-8', 'replace')}")
        if kind == b":":
            return int(rest)
        size = int(rest)
        if kind == b"$":
            return None if size < 0 else self._reader.read(size + 2)[:-2]
        if kind == b"*":
            return None if size < 0 else [self._reply() for _ in range(size)]
        raise ValueError(f"not a RESP reply: {line[:40]!r}")


class Pipeline:
    """Commands sent together, as redis-py's pipeline (the subset the registry uses)."""

    def __init__(self, client: LiteRedis, transaction: bool) -> None:
        self.client = client
        self.transaction = transaction
        self._commands: list[tuple[Any, ...]] = []

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._commands = []

    def hset(self, key: str, mapping: Mapping[str, Any]) -> Pipeline:
        self._commands.append(("HSET", key, *(item for pair in mapping.items() for item in pair)))
        return self

    def expire(self, key: str, seconds: int) -> Pipeline:
        self._commands.append(("EXPIRE", key, seconds))
        return self

    def hgetall(self, key: str | bytes) -> Pipeline:
        self._commands.append(("HGETALL", key))
        return self

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Every command's reply (HGETALL's as a dict); an error reply raised, or (with
        ``raise_on_error=False``) returned in its place."""
        commands, self._commands = self._commands, []
        if self.transaction:
            replies = self.client.execute([("MULTI",), *commands, ("EXEC",)])
            for reply in replies[:-1]:
                _checked(reply)  # MULTI's OK and each QUEUED; an error here aborts the EXEC
            replies = _checked(replies[-1])
        else:
            replies = self.client.execute(commands)
        results = [
            _as_hash(reply) if command[0] == "HGETALL" and isinstance(reply, list) else reply
            for command, reply in zip(commands, replies, strict=True)
        ]
        if raise_on_error:
            for result in results:
                _checked(result)
        return results


def _checked(reply: Any) -> Any:
    if isinstance(reply, ReplyError):
        raise reply
    return reply


def _as_hash(reply: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(reply[::2], reply[1::2], strict=True))
