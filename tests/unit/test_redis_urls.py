"""Which Redis URLs the worker registry's own client reads (jobs/redis_lite.py), and how: as
redis-py's ``from_url`` does; a URL with an option it does not know goes to redis-py."""

from __future__ import annotations

import ssl

import pytest
import redis

from jobs.redis_lite import LiteRedis, parse_url, registry_client


def test_host_port_database_and_credentials_are_read_as_redis_py_reads_them() -> None:
    endpoint = parse_url("redis://us%40er:p%3Ass@cache.internal:6380/7")

    assert endpoint is not None
    assert (endpoint.host, endpoint.port, endpoint.db, endpoint.path) == ("cache.internal", 6380, 7, None)
    assert (endpoint.username, endpoint.password) == ("us@er", "p:ss")
    assert endpoint.tls is None


def test_defaults_a_password_alone_and_the_database_as_a_parameter() -> None:
    endpoint = parse_url("redis://:secret@localhost?db=3")

    assert endpoint is not None
    assert (endpoint.host, endpoint.port, endpoint.db) == ("localhost", 6379, 3)
    assert (endpoint.username, endpoint.password) == (None, "secret")
    bare = parse_url("redis://")
    assert bare is not None
    assert (bare.host, bare.port, bare.db, bare.password) == ("localhost", 6379, 0, None)


def test_a_unix_socket_takes_its_database_from_the_query() -> None:
    endpoint = parse_url("unix:///run/redis/redis.sock?db=2")

    assert endpoint is not None
    assert (endpoint.path, endpoint.db) == ("/run/redis/redis.sock", 2)


def test_rediss_verifies_the_certificate_and_its_host_unless_told_otherwise() -> None:
    strict = parse_url("rediss://cache.internal:6390/0")
    relaxed = parse_url("rediss://cache.internal:6390/0?ssl_cert_reqs=none")
    no_host = parse_url("rediss://cache.internal:6390/0?ssl_check_hostname=false")

    assert strict is not None
    assert strict.tls is not None
    assert (strict.tls.verify_mode, strict.tls.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert relaxed is not None
    assert relaxed.tls is not None
    assert (relaxed.tls.verify_mode, relaxed.tls.check_hostname) == (ssl.CERT_NONE, False)
    assert no_host is not None
    assert no_host.tls is not None
    assert (no_host.tls.verify_mode, no_host.tls.check_hostname) == (ssl.CERT_REQUIRED, False)


@pytest.mark.parametrize(
    "url", ["redis://localhost/0?health_check_interval=10", "redis://localhost/0?socket_keepalive=true"]
)
def test_a_url_with_an_option_only_redis_py_knows_gets_redis_py(url: str) -> None:
    assert parse_url(url) is None
    client = registry_client(url, timeout=1)  # nothing is connected yet
    try:
        assert isinstance(client, redis.Redis)
    finally:
        client.close()
    assert isinstance(registry_client("redis://localhost/0", timeout=1), LiteRedis)
