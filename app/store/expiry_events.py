"""Redis's own expiry events: turned on, and listened to, per server.

Redis publishes `__keyevent@<db>__:expired` when a key with a TTL expires, if
`notify-keyspace-events` asks for it. The hold timers expire this way, and the expiry
listener (app/background/expiry.py) releases each hold as its event arrives.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ResponseError

log = logging.getLogger(__name__)


async def enable_expiry_events(redis: Redis) -> bool:
    """Add 'E' and 'x' to notify-keyspace-events, keeping flags already set. False if refused."""
    try:
        config = await redis.config_get("notify-keyspace-events")
        current = str(config.get("notify-keyspace-events") or "")
        flags = set(current)
        if {"E", "x"} <= flags or ("E" in flags and "A" in flags):
            return True
        await redis.config_set("notify-keyspace-events", "".join(sorted(flags | {"E", "x"})))
        return True
    except ResponseError as exc:
        # Managed Redis often forbids CONFIG: the operator must set it; the sweeper still works.
        log.warning("cannot set notify-keyspace-events (%s); relying on the sweeper", exc)
        return False


@asynccontextmanager
async def expired_keys(node: Redis) -> AsyncIterator[PubSub]:
    """A subscription to one server's expiry events; each message's data is a key name."""
    db = node.connection_pool.connection_kwargs.get("db", 0)
    async with node.pubsub(ignore_subscribe_messages=True) as pubsub:
        await pubsub.subscribe(f"__keyevent@{db}__:expired")
        yield pubsub
