"""The two routes a drop storm hammers, served without the framework's layers.

`POST /api/drops/{dropId}/reserve` and `GET /api/drops` carry nearly all of a drop's
traffic, and for them FastAPI's routing, dependency solving and exception layers cost
more than the work (docs/BENCHMARKS.md has the profile). Here they do the same work
through the same services, in the same order (caller, body, rate limits, reserve),
and answer with the same bodies and problems, inside the same request middleware
(request id, size limit, security headers, metrics, access log) and CORS policy.

Anything else, and any variant these do not handle (an `Idempotency-Key`, a query
string on the list), goes to FastAPI unchanged; the OpenAPI schema still describes
both routes, from their FastAPI declarations.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.api import render
from app.api.deps import client_ip, parse_bearer
from app.api.middleware import RequestContextMiddleware
from app.api.problems import error_response
from app.config import Settings
from app.container import Container
from app.errors import ValidationFailed
from app.runtime.busy_poll import BusyPoller

# Matched with fullmatch: `$` would also match before a trailing newline. The id itself
# is checked by the service (any malformed id is 404 DROP_NOT_FOUND, as on FastAPI's route).
_RESERVE_PATH = re.compile(r"/api/drops/([^/]+)/reserve")


@dataclass(frozen=True)
class _Route:
    """What the request middleware reads for its metrics label (`scope["route"].path`)."""

    path: str


RESERVE = _Route("/api/drops/{drop_id}/reserve")
LIST_DROPS = _Route("/api/drops")


def cors_options(settings: Settings) -> dict[str, Any]:
    """The CORS policy of every route (also applied by create_fastapi)."""
    return {
        "allow_origins": settings.cors_origins,
        "allow_methods": ["GET", "POST", "PATCH", "DELETE"],
        "allow_headers": ["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
        "expose_headers": ["X-Request-ID", "Retry-After"],
    }


def require_empty_body(body: bytes) -> None:
    """Routes that take no fields accept an empty body or `{}`."""
    if body.strip():
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ValidationFailed("Body must be empty or {}") from None
        if parsed != {}:
            raise ValidationFailed("Body must be empty or {}")


class RenderedCache:
    """One rendered body, shared by every request for `ttl` seconds while nothing changed.

    Every shopper polls the same storefront list; rendering it once per short window
    (and once at a time: concurrent requests wait for the render under way) keeps the
    cost of a poll at one small read and a copy of bytes. The caller passes the
    listing's version, read from Redis before the call: an admin change anywhere bumps
    it, so a body rendered before the change is never served after it (read your
    writes, whichever process answers). Only the stock figures, which change without
    a version bump, may be up to `ttl` old.
    """

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._body = b""
        self._version: str | None = None
        self._until = float("-inf")
        self._rendering: dict[str | None, asyncio.Future[bytes]] = {}

    async def get(self, render: Callable[[], Awaitable[bytes]], version: str | None) -> bytes:
        if self.ttl <= 0:
            return await render()
        if version == self._version and self.clock() < self._until:
            return self._body
        rendering = self._rendering.get(version)
        if rendering is None:
            rendering = asyncio.ensure_future(self._refresh(render, version))
            self._rendering[version] = rendering
        return await asyncio.shield(rendering)

    async def _refresh(self, render: Callable[[], Awaitable[bytes]], version: str | None) -> bytes:
        try:
            body = await render()  # read after `version`: it includes every change up to it
            self._body, self._version, self._until = body, version, self.clock() + self.ttl
            return body
        finally:
            del self._rendering[version]


class HotPaths:
    """ASGI: the two storm routes here, everything else to the FastAPI app."""

    def __init__(self, api: FastAPI, settings: Settings) -> None:
        self.api = api
        self.storefront = RenderedCache(settings.drops_cache_ms / 1000)
        lean: Any = self._serve
        if settings.cors_origins:
            lean = CORSMiddleware(lean, **cors_options(settings))
        self.lean = RequestContextMiddleware(lean)
        self.poller = BusyPoller(settings.busy_poll_ms / 1000)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.poller.kick()
            route = _route_of(scope)
            if route is not None:
                scope["route"] = route
                await self.lean(scope, receive, send)
                return
        await self.api(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        container: Container = self.api.state.container
        try:
            if scope["route"] is RESERVE:
                response = await _reserve(container, scope, receive)
            else:
                version = await container.drops.listing_version()
                body = await self.storefront.get(lambda: _render_storefront(container), version)
                response = Response(body, media_type="application/json")
        except ClientDisconnect:
            return  # nobody to answer; nothing was reserved
        except HTTPException:
            raise  # the request middleware's own (a body over the size limit: 413)
        except Exception as exc:
            response = error_response(exc)
        await response(scope, receive, send)


def _route_of(scope: Scope) -> _Route | None:
    method, path = scope["method"], scope["path"]
    if method == "POST" and path.endswith("/reserve"):
        match = _RESERVE_PATH.fullmatch(path)
        if match is None:
            return None
        for name, _ in scope["headers"]:
            if name == b"idempotency-key":
                return None  # FastAPI's route keeps and replays responses
        scope["path_params"] = {"drop_id": match.group(1)}
        return RESERVE
    if method == "GET" and path == "/api/drops" and not scope["query_string"]:
        return LIST_DROPS
    return None


def _bearer(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return parse_bearer(bytes(value).decode("latin-1"))
    return parse_bearer("")


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _reserve(container: Container, scope: Scope, receive: Receive) -> Response:
    drop_id: str = scope["path_params"]["drop_id"]
    token = _bearer(scope)
    if container.settings.redis_cluster:
        caller, unchecked_session = await container.auth.authenticate(token), None
    else:
        # The reserve script checks the sign-out marker: one round trip for both.
        caller = container.auth.verify(token)
        unchecked_session = caller.session_id
    ip = client_ip(Request(scope), container.settings.trusted_proxies)
    require_empty_body(await _body(receive))
    await container.rate_limiter.hit("reserve", caller.user_id)
    await container.rate_limiter.hit("reserve_ip", ip)
    held = await container.reservations.reserve(caller.user_id, drop_id, unchecked_session)
    return Response(orjson.dumps(render.reservation(held)), 201, media_type="application/json")


async def _render_storefront(container: Container) -> bytes:
    views = await container.drop_service.list(None)
    return orjson.dumps([render.drop(v) for v in views])
