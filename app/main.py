"""create_app(): the FastAPI API and the Socket.IO server as one ASGI app.

The lifespan owns every resource: it connects both stores, loads the Lua
scripts, makes sure the admin account exists, mirrors drops into Redis and
starts the background loops; on shutdown it stops them in reverse order.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import socketio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api import (
    routes_access,
    routes_admin,
    routes_auth,
    routes_drops,
    routes_holds,
    routes_ops,
)
from app.api.hot_paths import HotPaths, cors_options
from app.api.middleware import RequestContextMiddleware, request_id_of
from app.api.problems import install_problem_handlers, problem_body
from app.background.runner import BackgroundTasks
from app.config import Settings, get_settings
from app.container import Container, build_container
from app.events import StockLevel
from app.logs import configure_logging
from app.realtime.limits import SocketLimits
from app.realtime.session_routing import SessionRouting, routing_enabled
from app.realtime.socket import close_socket_server, create_socket_server, register_handlers
from app.runtime import http_limits
from app.runtime.gc_tuning import freeze_startup_objects
from app.runtime.session_ids import new_worker_id
from app.runtime.stalls import GcPauseRecorder
from app.store.client import RedisBudget, check_eviction_policy
from app.store.expiry_events import enable_expiry_events

log = logging.getLogger(__name__)


def _storefront_snapshot(container: Container) -> Any:
    async def snapshot() -> list[StockLevel]:
        views = await container.drop_service.list(None)
        return [
            StockLevel(
                v.definition.id,
                max(v.counters.available, 0),
                {s.size: max(s.available, 0) for s in v.counters.sizes} or None,
            )
            for v in views
        ]

    return snapshot


def _drop_stock(container: Container) -> Any:
    async def stock(drop_id: str) -> StockLevel | None:
        found = await container.drop_store.counts(drop_id)
        if found is None:
            return None
        counters, sizes = found
        levels = {s.size: max(s.available, 0) for s in sizes} or None
        return StockLevel(drop_id, max(counters[1], 0), levels)

    return stock


def _user_of(container: Container) -> Any:
    async def user_of(token: str) -> str:
        return (await container.auth_service.authenticate(token)).user_id

    return user_of


def create_fastapi(settings: Settings, sio: socketio.AsyncServer | None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        container = await build_container(settings)
        container.sio = sio
        app.state.container = container
        if sio is not None:
            register_handlers(
                sio,
                _storefront_snapshot(container),
                _drop_stock(container),
                SocketLimits(settings.socket_connections_per_ip),
                settings.trusted_proxies,
                _user_of(container),
            )
        await check_eviction_policy(container.redis, strict=settings.env == "production")
        await enable_expiry_events(container.redis)
        if settings.admin_email and settings.admin_password:
            await container.auth_service.ensure_admin(settings.admin_email, settings.admin_password)
        await container.drop_service.mirror_all()
        background = BackgroundTasks(container)
        app.state.background = background
        background.start()
        if settings.gc_freeze:
            freeze_startup_objects()
        gc_pauses = GcPauseRecorder()
        gc_pauses.install()
        routing: SessionRouting | None = getattr(app.state, "session_routing", None)
        if routing is not None:
            await routing.start(container.redis)
        log.info("sneakerdrop ready")
        try:
            yield
        finally:
            gc_pauses.uninstall()
            if routing is not None:
                await routing.stop()
            await background.stop()
            if sio is not None:
                await close_socket_server(sio)
            await container.close()

    app = FastAPI(
        title="sneakerdrop",
        version="0.1.0",
        summary="Redis-first reservation engine for limited sneaker drops",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    for router in (
        routes_auth.router,
        routes_drops.router,
        routes_holds.router,
        routes_access.router,
        routes_ops.router,
        routes_admin.router,
    ):
        app.include_router(router)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, **cors_options(settings))
    app.add_middleware(RequestContextMiddleware)
    return app


def create_app(settings: Settings | None = None) -> SessionRouting:
    """The ASGI app uvicorn serves (`app.main:create_app`, factory)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    http_limits.answer_as_the_api(problem_body, request_id_of)  # a 431 answers as the API does
    worker_id = new_worker_id() if routing_enabled(settings) else None
    sio = create_socket_server(
        settings.redis_url,
        settings.cors_origins,
        budget=RedisBudget.split(settings.redis_max_connections),
        timeout=settings.redis_timeout_seconds,
        worker_id=worker_id,
        cluster=settings.redis_cluster,
        sequential_fan_out=settings.socket_fanout == "sequential",
    )
    api = create_fastapi(settings, sio)
    asgi = socketio.ASGIApp(sio, other_asgi_app=HotPaths(api, settings), socketio_path="socket.io")
    asgi.api = api  # for tests and tools: the FastAPI app inside
    # Each request of a Socket.IO session goes to the worker holding it, wherever it lands.
    routed = SessionRouting(asgi, sio, settings, worker_id)
    api.state.session_routing = routed
    return routed
