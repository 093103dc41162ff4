"""Redis must not evict holds: start-up checks maxmemory-policy."""

from __future__ import annotations

import pytest

from app.store.client import check_eviction_policy, create_redis
from tests.support.stores import StoreUrls


async def test_eviction_policy_is_checked(stores: StoreUrls) -> None:
    redis = create_redis(stores.redis_url)
    try:
        original = str((await redis.config_get("maxmemory-policy"))["maxmemory-policy"])
        await redis.config_set("maxmemory-policy", "noeviction")
        assert await check_eviction_policy(redis, strict=True) == "noeviction"
        await redis.config_set("maxmemory-policy", "allkeys-lru")
        assert await check_eviction_policy(redis, strict=False) == "allkeys-lru"
        with pytest.raises(RuntimeError, match="noeviction"):
            await check_eviction_policy(redis, strict=True)
    finally:
        await redis.config_set("maxmemory-policy", original)
        await redis.aclose()
