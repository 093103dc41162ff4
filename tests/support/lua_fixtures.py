"""Fixtures and helpers for the Lua contract tests (tests/integration/lua/).

Every script runs on the real Redis of the `stores` fixture. Time always comes from
Redis `TIME` (the clock the scripts read), never from the local clock.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from app.domain import DropDefinition, from_ms, to_ms
from app.store.channels import database_of, stock_dirty_channel
from app.store.client import create_redis
from app.store.drops import DropStore, RebuildMode, RebuildOutcome
from app.store.holds import HoldEntry, HoldStore, ReserveOutcome, ReserveResult, parse_entry
from app.store.keys import DropKeys, HoldRef, new_id
from app.store.pipelined import PipelinedConnection
from app.store.scripts import ScriptName, Scripts
from tests.support.stores import StoreUrls

TTL_MS = 60_000  # a hold that will not expire during a test
WAIT_S = 5.0  # upper bound of every poll


@pytest.fixture
async def redis(stores: StoreUrls) -> AsyncIterator[Redis]:
    """A client on the test Redis; depends on `stores`, so clean_slate flushed it."""
    client = create_redis(stores.redis_url)
    try:
        yield client
    finally:
        # Close the pool explicitly: a client built on a given pool does not close it itself.
        await client.aclose(close_connection_pool=True)


@pytest.fixture
async def pipelined(stores: StoreUrls) -> AsyncIterator[PipelinedConnection]:
    """The shared connection the app sends its scripts over (not on a cluster)."""
    connection = PipelinedConnection(stores.redis_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def scripts(redis: Redis, pipelined: PipelinedConnection) -> Scripts:
    """The scripts as the app runs them: EVALSHA over the pipelined connection."""
    loaded = Scripts(redis, pipelined)
    await loaded.load_all()
    return loaded


@pytest.fixture
def hold_store(redis: Redis, scripts: Scripts) -> HoldStore:
    return HoldStore(redis, scripts)


@pytest.fixture
def drop_store(redis: Redis, scripts: Scripts) -> DropStore:
    return DropStore(redis, scripts)


async def redis_now_ms(redis: Redis) -> int:
    """Redis TIME in milliseconds, computed exactly as the scripts do."""
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def wait_for_redis_time(redis: Redis, target_ms: int) -> int:
    """Poll Redis TIME (bounded) until it reaches `target_ms`; returns that time."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while (now := await redis_now_ms(redis)) < target_ms:
        assert asyncio.get_running_loop().time() < deadline, "Redis TIME did not reach target"
        await asyncio.sleep(0.005)
    return now


def definition(
    starts_ms: int,
    *,
    drop_id: str | None = None,
    total: int = 10,
    limit: int = 2,
    ends_ms: int | None = None,
    cancelled: bool = False,
    name: str = "Lua Runner",
) -> DropDefinition:
    """A drop definition; times should be whole seconds so ms survive datetime round trips."""
    return DropDefinition(
        id=drop_id or new_id(),
        name=name,
        brand="Acme",
        image_url=None,
        price_cents=12_000,
        currency="EUR",
        total_stock=total,
        per_user_limit=limit,
        starts_at=from_ms(starts_ms),
        ends_at=from_ms(ends_ms) if ends_ms is not None else None,
        cancelled=cancelled,
    )


async def whole_second(redis: Redis, offset_s: int) -> int:
    """Redis time plus `offset_s`, rounded down to a whole second, in ms."""
    return (await redis_now_ms(redis) // 1000 + offset_s) * 1000


MakeDrop = Callable[..., Awaitable[DropDefinition]]


@pytest.fixture
def make_drop(redis: Redis, drop_store: DropStore) -> MakeDrop:
    """Mirror a drop with DropStore.rebuild(INIT, ...); live by default (started a minute ago)."""

    async def factory(
        *,
        total: int = 10,
        limit: int = 2,
        starts_in_s: int = -60,
        ends_in_s: int | None = None,
        cancelled: bool = False,
        sold: int = 0,
        purchases_by_user: dict[str, int] | None = None,
    ) -> DropDefinition:
        starts = await whole_second(redis, starts_in_s)
        ends = await whole_second(redis, ends_in_s) if ends_in_s is not None else None
        drop = definition(starts, total=total, limit=limit, ends_ms=ends, cancelled=cancelled)
        outcome, _ = await drop_store.rebuild(RebuildMode.INIT, drop, sold, purchases_by_user or {})
        assert outcome is RebuildOutcome.BUILT
        return drop

    return factory


def new_ref(drop_id: str, user_id: str | None = None) -> HoldRef:
    user = user_id or new_id()
    return HoldRef(drop_id, user, f"{drop_id}.{user}.{secrets.token_hex(8)}")


async def reserve_ok(
    hold_store: HoldStore, drop_id: str, user_id: str | None = None, ttl_ms: int = TTL_MS
) -> tuple[HoldRef, ReserveResult]:
    ref = new_ref(drop_id, user_id)
    result = await hold_store.reserve(ref, ttl_ms)
    assert result.outcome is ReserveOutcome.OK, result
    return ref, result


def mirrored_fields(
    drop: DropDefinition,
    *,
    avail: int,
    sold: int = 0,
    purchasing: int = 0,
    total: int | None = None,
    dirty: bool = True,
    epoch: int = 0,
) -> dict[str, str]:
    """The exact HGETALL of a mirrored drop hash."""
    fields = {
        "def": drop.to_json(),
        "total": str(drop.total_stock if total is None else total),
        "avail": str(avail),
        "sold": str(sold),
        "purchasing": str(purchasing),
        "limit": str(drop.per_user_limit),
        "starts": str(to_ms(drop.starts_at)),
        "ends": str(to_ms(drop.ends_at) if drop.ends_at else 0),
        "cancelled": "1" if drop.cancelled else "0",
        "epoch": str(epoch),
    }
    if dirty:
        fields["dirty"] = "1"
    return fields


async def drop_hash(redis: Redis, drop_id: str) -> dict[str, str]:
    return cast(dict[str, str], await redis.hgetall(DropKeys(drop_id).drop))


async def users_hash(redis: Redis, drop_id: str) -> dict[str, str]:
    return cast(dict[str, str], await redis.hgetall(DropKeys(drop_id).users))


async def hold_entry(redis: Redis, ref: HoldRef) -> HoldEntry | None:
    raw = await redis.hget(DropKeys(ref.drop_id).holds, ref.hold_id)
    return parse_entry(cast(str, raw)) if raw is not None else None


async def closed_entry(redis: Redis, ref: HoldRef) -> HoldEntry | None:
    raw = await redis.hget(DropKeys(ref.drop_id).closed, ref.hold_id)
    return parse_entry(cast(str, raw)) if raw is not None else None


async def due_score(redis: Redis, ref: HoldRef) -> float | None:
    score: float | None = await redis.zscore(DropKeys(ref.drop_id).due, ref.hold_id)
    return score


async def timer_pttl(redis: Redis, ref: HoldRef) -> int:
    """PTTL of the hold's timer key: -2 when it does not exist."""
    return int(await redis.pttl(DropKeys(ref.drop_id).timer(ref.hold_id)))


async def user_holds(redis: Redis, ref: HoldRef) -> set[str]:
    keys = DropKeys(ref.drop_id)
    return cast(set[str], await redis.smembers(keys.user_holds(ref.user_id)))


async def stock_take(scripts: Scripts, drop_id: str) -> int:
    """Run stock_take.lua as the broadcaster does; the drop's available stock."""
    take = scripts.script(ScriptName.STOCK_TAKE)
    keys = DropKeys(drop_id)
    return int((await take(keys=[keys.drop, keys.sizes]))[0])


async def snapshot(redis: Redis, drop_id: str) -> dict[str, Any]:
    """Every key of one drop with its value (no TTLs): to prove that a refusal wrote nothing."""
    state: dict[str, Any] = {}
    async for key in redis.scan_iter(match=f"{DropKeys(drop_id).tag}*"):
        kind = await redis.type(key)
        if kind == "hash":
            state[key] = await redis.hgetall(key)
        elif kind == "zset":
            state[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            state[key] = sorted(await redis.smembers(key))
        elif kind == "list":
            state[key] = await redis.lrange(key, 0, -1)
        else:
            state[key] = (kind, await redis.get(key))
    return state


class StockChannel:
    """Records what is published on the stock-dirty channel.

    `messages()` publishes a unique marker and reads up to it: messages on one channel
    arrive in order, so everything published before the call is counted, exactly.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pubsub: PubSub = redis.pubsub()
        self.channel = stock_dirty_channel(database_of(redis))

    async def __aenter__(self) -> StockChannel:
        await self._pubsub.subscribe(self.channel)
        await self._read_until(lambda message: message["type"] == "subscribe")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._pubsub.unsubscribe()
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _read_until(self, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        seen: list[dict[str, Any]] = []
        while True:
            remaining = deadline - loop.time()
            assert remaining > 0, f"no end marker on {self.channel}; got {seen}"
            message = await self._pubsub.get_message(timeout=remaining)
            if message is None:
                continue
            if done(message):
                return seen
            seen.append(message)

    async def messages(self) -> list[str]:
        marker = f"marker:{secrets.token_hex(8)}"
        await self._redis.publish(self.channel, marker)
        seen = await self._read_until(lambda message: message["data"] == marker)
        return [str(message["data"]) for message in seen if message["type"] == "message"]
