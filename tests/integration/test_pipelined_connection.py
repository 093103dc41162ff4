"""The shared pipelined connection on a real Redis: replies reach their own callers,
errors stay with their command, and a dead, stuck or refusing server fails the
waiting callers with the errors the app turns into 503, after which it reconnects."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.embedded.common import free_port
from app.store.client import REDIS_UNAVAILABLE, create_redis
from app.store.pipelined import PipelinedConnection
from tests.support.lua_fixtures import pipelined, redis
from tests.support.stores import StoreUrls

__all__ = ["pipelined", "redis"]  # fixtures

ECHO_ARGS = "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}"


@asynccontextmanager
async def _connection(url: str, **options: float) -> AsyncIterator[PipelinedConnection]:
    conn = PipelinedConnection(url, **options)
    try:
        yield conn
    finally:
        await conn.close()


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}", query=""))


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f":{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def test_concurrent_callers_each_get_their_own_reply(
    pipelined: PipelinedConnection, redis: Redis
) -> None:
    sha = await redis.script_load(ECHO_ARGS)
    replies = await asyncio.gather(
        *(pipelined.execute("EVALSHA", sha, 1, f"key-{n}", f"arg-{n}", n) for n in range(500))
    )
    assert replies == [[f"key-{n}", f"arg-{n}", n + 1] for n in range(500)]


async def test_an_error_reply_fails_only_its_own_command(
    pipelined: PipelinedConnection, redis: Redis
) -> None:
    sha = await redis.script_load(ECHO_ARGS)
    missing = "0" * 40
    results = await asyncio.gather(
        pipelined.execute("EVALSHA", sha, 1, "k", "before", 1),
        pipelined.execute("EVALSHA", missing, 0),
        pipelined.execute("EVAL", "return redis.error_reply('BOOM here')", 0),
        pipelined.execute("EVALSHA", sha, 1, "k", "after", 2),
        return_exceptions=True,
    )
    assert results[0] == ["k", "before", 2]
    assert isinstance(results[1], NoScriptError)
    assert isinstance(results[2], ResponseError)
    assert "BOOM here" in str(results[2])
    assert not isinstance(results[2], NoScriptError)
    assert results[3] == ["k", "after", 3]


async def test_it_selects_the_database_of_its_url(stores: StoreUrls, redis: Redis) -> None:
    own_db = int(urlsplit(stores.redis_url).path.lstrip("/") or 0)
    other_db = (own_db + 1) % 16
    key = f"pipelined-select-{secrets.token_hex(4)}"
    conn = PipelinedConnection(_with_db(stores.redis_url, other_db))
    other = create_redis(_with_db(stores.redis_url, other_db))
    try:
        assert await conn.execute("SET", key, "here") == "OK"
        assert await other.get(key) == "here"
        assert await redis.get(key) is None  # not in the test's own database
    finally:
        await other.delete(key)
        await other.aclose(close_connection_pool=True)
        await conn.close()


async def test_a_killed_connection_fails_its_waiters_then_reconnects(
    pipelined: PipelinedConnection, redis: Redis
) -> None:
    client_id, waiting = await _blocked_in_blpop(pipelined, redis, "never-pushed")
    assert await redis.execute_command("CLIENT", "KILL", "ID", client_id) == 1
    with pytest.raises(RedisConnectionError):
        await waiting
    assert await pipelined.execute("PING") == "PONG"
    assert await pipelined.execute("CLIENT", "ID") != client_id


async def test_a_command_left_unanswered_times_out_and_the_next_one_reconnects(
    stores: StoreUrls,
) -> None:
    async with _connection(stores.redis_url, timeout=0.3) as conn:
        first_id = await conn.execute("CLIENT", "ID")
        stuck = conn.execute("BLPOP", "never-pushed", 5)
        queued_behind = conn.execute("PING")
        results = await asyncio.gather(stuck, queued_behind, return_exceptions=True)
        assert all(isinstance(r, RedisTimeoutError) for r in results), results
        assert all(isinstance(r, REDIS_UNAVAILABLE) for r in results)
        assert await conn.execute("PING") == "PONG"
        assert await conn.execute("CLIENT", "ID") != first_id


async def test_a_cancelled_caller_does_not_shift_the_replies(
    pipelined: PipelinedConnection, redis: Redis
) -> None:
    _, cancelled = await _blocked_in_blpop(pipelined, redis, "soon-pushed")
    cancelled.cancel()
    after = asyncio.ensure_future(pipelined.execute("ECHO", "mine"))
    await redis.rpush("soon-pushed", "for-the-cancelled-one")
    assert await after == "mine"
    assert cancelled.cancelled()


async def test_a_refused_connection_is_a_connection_error(stores: StoreUrls) -> None:
    parts = urlsplit(stores.redis_url)
    url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{free_port()}"))
    async with _connection(url, connect_timeout=1) as conn:
        with pytest.raises(RedisConnectionError):
            await conn.execute("PING")


async def test_a_refused_password_is_an_authentication_error(stores: StoreUrls) -> None:
    async with _connection(_with_password(stores.redis_url, "not-the-password")) as conn:
        with pytest.raises(AuthenticationError):
            await conn.execute("PING")
        assert not conn.connected


async def test_callers_during_a_connect_share_it(pipelined: PipelinedConnection) -> None:
    ids = await asyncio.gather(*(pipelined.execute("CLIENT", "ID") for _ in range(20)))
    assert len(set(ids)) == 1


async def test_close_fails_the_waiting_and_refuses_the_next(
    pipelined: PipelinedConnection, redis: Redis
) -> None:
    _, waiting = await _blocked_in_blpop(pipelined, redis, "never-pushed")
    await pipelined.close()
    with pytest.raises(RedisConnectionError):
        await waiting
    with pytest.raises(RedisConnectionError):
        await pipelined.execute("PING")


async def _blocked_in_blpop(
    pipelined: PipelinedConnection, redis: Redis, key: str
) -> tuple[int, asyncio.Future[Any]]:
    """A BLPOP in flight on the connection, seen blocked by the server (bounded wait)."""
    client_id = await pipelined.execute("CLIENT", "ID")
    waiting = asyncio.ensure_future(pipelined.execute("BLPOP", key, 5))
    for _ in range(500):
        listing = await redis.execute_command("CLIENT", "LIST", "ID", client_id)
        if "cmd=blpop" in str(listing):
            return client_id, waiting
        await asyncio.sleep(0.01)
    raise AssertionError("the client never blocked")


async def test_an_undecodable_reply_fails_the_connection_not_the_process(
    pipelined: PipelinedConnection, caplog: pytest.LogCaptureFixture
) -> None:
    """Replies are decoded as UTF-8, as the app's redis-py client does; bytes that are not
    UTF-8 fail the waiting callers with a ConnectionError (handled, not a crash of the
    protocol that the event loop reports), and the next call reconnects."""
    await pipelined.execute("SET", "not-utf8", b"\xff\xfe")
    with pytest.raises(RedisConnectionError, match="unreadable reply"):
        await pipelined.execute("GET", "not-utf8")
    assert await pipelined.execute("PING") == "PONG"
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelname == "ERROR"]
