"""rate_limit.lua: a fixed window shared by every process."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from app.store import keys
from app.store.scripts import ScriptName, Scripts
from tests.support.lua_fixtures import WAIT_S

LIMIT = 3
WINDOW_MS = 60_000


async def _hit(
    scripts: Scripts, bucket: str, limit: int = LIMIT, window_ms: int = WINDOW_MS
) -> list[object]:
    return await scripts.run(ScriptName.RATE_LIMIT, [bucket], [limit, window_ms])


async def test_allowed_counts_down_then_limited(redis: Redis, scripts: Scripts) -> None:
    bucket = keys.rate_bucket("login", "10.0.0.1", 1)
    assert await _hit(scripts, bucket) == ["ALLOWED", 2]
    assert WINDOW_MS - 2_000 <= await redis.pttl(bucket) <= WINDOW_MS
    assert await _hit(scripts, bucket) == ["ALLOWED", 1]
    assert await _hit(scripts, bucket) == ["ALLOWED", 0]
    for _ in range(2):
        outcome, retry_after = await _hit(scripts, bucket)
        assert outcome == "LIMITED"
        assert isinstance(retry_after, int)
        assert 0 < retry_after <= WINDOW_MS
        assert retry_after >= await redis.pttl(bucket)
    assert await redis.get(bucket) == "5"


async def test_buckets_are_independent(redis: Redis, scripts: Scripts) -> None:
    first = keys.rate_bucket("login", "10.0.0.1", 1)
    other = keys.rate_bucket("login", "10.0.0.2", 1)
    for _ in range(LIMIT + 1):
        await _hit(scripts, first)
    assert await _hit(scripts, other) == ["ALLOWED", 2]


async def test_a_new_window_starts_after_expiry(redis: Redis, scripts: Scripts) -> None:
    bucket = keys.rate_bucket("reserve", "user", 7)
    for _ in range(LIMIT):
        assert (await _hit(scripts, bucket, window_ms=100))[0] == "ALLOWED"
    limited = await _hit(scripts, bucket, window_ms=100)
    assert limited[0] == "LIMITED"
    assert isinstance(limited[1], int)
    assert 0 < limited[1] <= 100
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while await redis.exists(bucket):  # the window ends when the key expires
        assert asyncio.get_running_loop().time() < deadline, "bucket never expired"
        await asyncio.sleep(0.01)
    assert await _hit(scripts, bucket, window_ms=100) == ["ALLOWED", LIMIT - 1]


async def test_a_bucket_without_expiry_gets_one_when_limited(
    redis: Redis, scripts: Scripts
) -> None:
    """A counter that lost its TTL would limit forever: the script re-arms the window."""
    bucket = keys.rate_bucket("login", "stuck", 1)
    await redis.set(bucket, LIMIT)
    assert await _hit(scripts, bucket) == ["LIMITED", WINDOW_MS]
    assert WINDOW_MS - 2_000 <= await redis.pttl(bucket) <= WINDOW_MS
