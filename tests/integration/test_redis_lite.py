"""The worker registry's own Redis client (jobs/redis_lite.py), against the real Redis: what it
writes and reads is what redis-py sees, and it fails and recovers as the registry needs."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
import redis

from jobs.errors import RegistryUnavailable
from jobs.redis_lite import LiteRedis, ReplyError, registry_client
from jobs.settings import Settings

pytestmark = pytest.mark.integration

URL = Settings().redis_url


@pytest.fixture
def plain() -> Iterator[redis.Redis]:
    """redis-py on the same server, to check what the client under test wrote."""
    client = redis.Redis.from_url(URL)
    yield client
    client.close()


@pytest.fixture
def lite() -> Iterator[LiteRedis]:
    client = registry_client(URL, timeout=1)
    assert isinstance(client, LiteRedis)
    yield client
    client.close()


@pytest.fixture
def prefix(plain: redis.Redis) -> Iterator[str]:
    prefix = f"lite-{secrets.token_hex(4)}:"
    yield prefix
    keys = list(plain.scan_iter(match=f"{prefix}*"))
    if keys:
        plain.delete(*keys)


def test_a_transaction_writes_a_hash_and_its_ttl_as_redis_py_reads_them(
    lite: LiteRedis, plain: redis.Redis, prefix: str
) -> None:
    key = f"{prefix}entry"
    with lite.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping={"pid": 42, "queues": "a,b", "name": "ünï \r\n $3"})
        pipe.expire(key, 30)
        assert pipe.execute() == [3, 1]

    assert plain.hgetall(key) == {b"pid": b"42", b"queues": b"a,b", b"name": "ünï \r\n $3".encode()}
    assert 0 < int(plain.ttl(key)) <= 30
    assert lite.hgetall(key) == plain.hgetall(key)
    assert lite.delete(key, f"{prefix}absent") == 1
    assert plain.exists(key) == 0


def test_scan_finds_every_key_of_a_prefix_over_many_rounds(
    lite: LiteRedis, plain: redis.Redis, prefix: str
) -> None:
    keys = {f"{prefix}{n}".encode() for n in range(1_234)}
    plain.mset(dict.fromkeys(keys, b"x"))
    plain.set(f"other-{prefix}", b"x", ex=30)

    found = list(lite.scan_iter(match=f"{prefix}*", count=100))

    assert set(found) == keys  # SCAN may repeat a key, never miss one
    plain.delete(f"other-{prefix}")


def test_an_error_reply_is_returned_in_place_or_raised(
    lite: LiteRedis, plain: redis.Redis, prefix: str
) -> None:
    plain.set(f"{prefix}string", "not a hash")
    plain.hset(f"{prefix}hash", mapping={"a": "1"})
    with lite.pipeline(transaction=False) as pipe:
        pipe.hgetall(f"{prefix}hash").hgetall(f"{prefix}string").hgetall(f"{prefix}none")
        first, wrong, empty = pipe.execute(raise_on_error=False)
    assert (first, empty) == ({b"a": b"1"}, {})
    assert isinstance(wrong, ReplyError)
    assert "WRONGTYPE" in str(wrong)

    with lite.pipeline(transaction=False) as pipe, pytest.raises(ReplyError, match="WRONGTYPE"):
        pipe.hgetall(f"{prefix}string").execute()
    # The connection is still in step: the next answer is the next command's.
    assert lite.ping() is True


def test_a_connection_closed_by_redis_is_replaced_without_an_error(
    lite: LiteRedis, plain: redis.Redis
) -> None:
    assert lite.ping() is True
    name = f"lite-{secrets.token_hex(4)}"
    lite.execute([("CLIENT", "SETNAME", name)])
    killed = [c for c in plain.client_list() if c.get("name") == name]
    assert len(killed) == 1
    plain.client_kill_filter(_id=killed[0]["id"])

    assert lite.ping() is True
    assert not [c for c in plain.client_list() if c.get("name") == name]  # a new connection


def test_an_unreachable_redis_raises_registry_unavailable_and_is_retried_next_time(
    plain: redis.Redis,
) -> None:
    client = registry_client("redis://127.0.0.1:1/0", timeout=1)
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match=r"Redis at redis://127\.0\.0\.1:1/0") as failure:
        client.ping()
    assert isinstance(failure.value.__cause__, OSError)
    assert time.monotonic() - started < 5
    with pytest.raises(RegistryUnavailable):  # each call tries again, none is cached
        client.delete("x")


def test_a_user_and_password_and_a_database_number_are_used(plain: redis.Redis, prefix: str) -> None:
    user, password = f"lite-{secrets.token_hex(4)}", secrets.token_hex(8)
    plain.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"])
    try:
        client = registry_client(f"redis://{user}:{password}@127.0.0.1:6379/5", timeout=1)
        client.delete(f"{prefix}db5")
        with client.pipeline() as pipe:
            pipe.hset(f"{prefix}db5", mapping={"a": "1"}).expire(f"{prefix}db5", 30).execute()
        on_5 = redis.Redis.from_url("redis://127.0.0.1:6379/5")
        assert on_5.hgetall(f"{prefix}db5") == {b"a": b"1"}
        assert plain.exists(f"{prefix}db5") == 0  # not on database 0
        on_5.delete(f"{prefix}db5")
        on_5.close()
        client.close()

        wrong = registry_client(f"redis://{user}:not-it@127.0.0.1:6379/5", timeout=1)
        with pytest.raises(RegistryUnavailable, match="WRONGPASS") as failure:
            wrong.ping()
        assert "not-it" not in str(failure.value)
        with pytest.raises(RegistryUnavailable, match="WRONGPASS"):  # not left logged out but open
            wrong.ping()
    finally:
        plain.acl_deluser(user)
