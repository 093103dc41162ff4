"""The process's resources and services, built once in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import socketio
from redis.asyncio import Redis

from app.config import Settings
from app.db.session import Database
from app.services.access import AccessService
from app.services.auth import AuthService
from app.services.drops import DropService
from app.services.holds import HoldService
from app.services.passwords import PasswordHasher
from app.services.ratelimit import RateLimiter
from app.store.access import AccessStore
from app.store.client import RedisBudget, create_redis
from app.store.drops import DropStore
from app.store.holds import HoldStore
from app.store.idempotency import IdempotencyStore
from app.store.limits import LimitStore
from app.store.pipelined import PipelinedConnection
from app.store.scripts import Scripts
from app.store.sessions import SessionStore


@dataclass
class Container:
    settings: Settings
    db: Database
    redis: Redis
    scripts: Scripts
    hold_store: HoldStore
    drop_store: DropStore
    session_store: SessionStore
    idempotency_store: IdempotencyStore
    auth_service: AuthService
    drop_service: DropService
    hold_service: HoldService
    rate_limiter: RateLimiter
    access_store: AccessStore
    access_service: AccessService
    sio: socketio.AsyncServer | None = None
    pipelined: PipelinedConnection | None = None

    async def close(self) -> None:
        self.auth_service.hasher.close()
        if self.pipelined is not None:
            await self.pipelined.close()
        await self.redis.aclose()
        await self.db.dispose()


async def build_container(settings: Settings) -> Container:
    """Connect to both stores and load the Lua scripts (a broken script fails here)."""
    if not settings.database_url or not settings.redis_url:
        raise RuntimeError(
            "DATABASE_URL and REDIS_URL must be set (`sneakerdrop serve` starts embedded ones)"
        )
    db = Database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )
    redis = create_redis(
        settings.redis_url,
        cluster=settings.redis_cluster,
        max_connections=RedisBudget.split(settings.redis_max_connections).app_pool,
        timeout=settings.redis_timeout_seconds,
    )
    # The scripts share one pipelined connection per process (not on a cluster, where
    # a command goes to the node that owns its keys).
    pipelined = (
        None
        if settings.redis_cluster
        else PipelinedConnection(settings.redis_url, timeout=settings.redis_timeout_seconds)
    )
    scripts = Scripts(redis, pipelined)
    await scripts.load_all()
    hold_store = HoldStore(redis, scripts, cooldown_ms=settings.reserve_cooldown_seconds * 1000)
    drop_store = DropStore(redis, scripts, pipelined)
    drop_service = DropService(db, drop_store, hold_store)
    session_store = SessionStore(redis, settings.access_token_ttl_seconds)
    access_store = AccessStore(redis, scripts)
    access_service = AccessService(db, drop_service, access_store)
    hold_service = HoldService(settings, db, hold_store, drop_service.ensure_mirrored)
    hold_service.on_released = access_service.released
    return Container(
        settings=settings,
        db=db,
        redis=redis,
        scripts=scripts,
        hold_store=hold_store,
        drop_store=drop_store,
        session_store=session_store,
        idempotency_store=IdempotencyStore(redis),
        auth_service=AuthService(
            settings,
            db,
            session_store,
            PasswordHasher(settings.bcrypt_rounds, settings.password_hash_processes),
        ),
        drop_service=drop_service,
        hold_service=hold_service,
        rate_limiter=RateLimiter(settings, LimitStore(scripts)),
        access_store=access_store,
        access_service=access_service,
        pipelined=pipelined,
    )
