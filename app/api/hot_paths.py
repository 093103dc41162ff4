"""The routes a drop storm hammers, served without the framework's layers.

`POST /api/drops/{dropId}/reserve` and `GET /api/drops` carry nearly all of a drop's
traffic, and its winners then buy at once (`POST /api/reservations/{id}/purchase`, and
the original `POST /api/drops/{id}/purchase`). A queue or draw drop's shoppers join or
enter in the minute before it and then poll their ticket or entry
(`POST|GET /api/drops/{id}/queue[/me]`, `POST|GET /api/drops/{id}/entries[/me]`). For them FastAPI's routing, dependency solving and exception layers cost
more than the work (docs/BENCHMARKS.md has the profile). Here they do the same work
through the same services, in the same order (caller, body, rate limits, reserve),
and answer with the same bodies and problems, inside the same request middleware
(request id, size limit, security headers, metrics, access log) and CORS policy.

Anything else, and any variant these do not handle (an `Idempotency-Key`, a query
string on the list), goes to FastAPI unchanged; the OpenAPI schema still describes
these routes, from their FastAPI declarations.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.api import access_flows, render
from app.api.access_flows import ENTRIES_ROUTE, ENTRY_ROUTE, QUEUE_ROUTE, TICKET_ROUTE
from app.api.middleware import RequestContextMiddleware
from app.api.problems import error_response
from app.api.purchase import LEGACY_PURCHASE_ROUTE, PURCHASE_ROUTE, purchase
from app.api.reserve import RESERVE_ROUTE, reserve
from app.config import Settings
from app.container import Container
from app.runtime.busy_poll import BusyPoller

# Matched with fullmatch: `$` would also match before a trailing newline. The id itself
# is checked by the service (any malformed id is 404 DROP_NOT_FOUND, as on FastAPI's route).
_RESERVE_PATH = re.compile(r"/api/drops/([^/]+)/reserve")
_PURCHASE_PATH = re.compile(r"/api/(reservations|drops)/([^/]+)/purchase")
# A queue's or a draw's own route: (POST|GET, kind, "/me" or "").
_ACCESS_PATH = re.compile(r"/api/drops/([^/]+)/(queue|entries)(/me)?")
# (method, kind, mine) -> the flow and the route template it serves.
_ACCESS_FLOWS: dict[tuple[str, str, bool], tuple[Any, str]] = {
    ("POST", "queue", False): (access_flows.join, QUEUE_ROUTE),
    ("GET", "queue", True): (access_flows.ticket, TICKET_ROUTE),
    ("POST", "entries", False): (access_flows.enter, ENTRIES_ROUTE),
    ("GET", "entries", True): (access_flows.entry, ENTRY_ROUTE),
}


def cors_options(settings: Settings) -> dict[str, Any]:
    """The CORS policy of every route (also applied by create_fastapi)."""
    return {
        "allow_origins": settings.cors_origins,
        "allow_methods": ["GET", "POST", "PATCH", "DELETE"],
        "allow_headers": ["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
        "expose_headers": ["X-Request-ID", "Retry-After"],
    }


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
    """ASGI: the two storm routes here, everything else to the FastAPI app.

    A request served here carries FastAPI's own route object in `scope["route"]`, so
    the request middleware labels its metrics exactly as FastAPI's route would.
    """

    def __init__(self, api: FastAPI, settings: Settings) -> None:
        self.api = api
        self.storefront = RenderedCache(settings.drops_cache_ms / 1000)
        lean: Any = self._serve
        if settings.cors_origins:
            lean = CORSMiddleware(lean, **cors_options(settings))
        self.lean = RequestContextMiddleware(lean)
        self.poller = BusyPoller(settings.busy_poll_ms / 1000)

    @functools.cached_property
    def reserve_route(self) -> APIRoute:
        return _declared(self.api, "POST", RESERVE_ROUTE)

    @functools.cached_property
    def purchase_routes(self) -> dict[str, APIRoute]:
        return {
            "reservations": _declared(self.api, "POST", PURCHASE_ROUTE),
            "drops": _declared(self.api, "POST", LEGACY_PURCHASE_ROUTE),
        }

    @functools.cached_property
    def list_route(self) -> APIRoute:
        return _declared(self.api, "GET", "/api/drops")

    @functools.cached_property
    def access_routes(self) -> dict[tuple[str, str, bool], APIRoute]:
        return {
            key: _declared(self.api, key[0], template)
            for key, (_, template) in _ACCESS_FLOWS.items()
        }

    @functools.cached_property
    def access_flows(self) -> dict[int, Any]:
        """id(FastAPI's route) -> the flow the lean path runs for it (routes are not
        hashable; each is one object for the app's life)."""
        return {id(self.access_routes[key]): flow for key, (flow, _) in _ACCESS_FLOWS.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if not scope["path"].endswith("/purchase"):
                # A purchase waits on PostgreSQL, which needs these cores meanwhile: a
                # loop spinning through its round trips cost a purchase storm a quarter
                # of its throughput (docs/RUNTIME.md, "Busy polling").
                self.poller.kick()
            route = self._route_of(scope)
            if route is not None:
                scope["route"] = route
                await self.lean(scope, receive, send)
                return
        await self.api(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        container: Container = self.api.state.container
        try:
            route = scope["route"]
            if route is self.reserve_route:
                drop_id: str = scope["path_params"]["drop_id"]
                response = await reserve(container, Request(scope, receive), drop_id)
            elif route is self.list_route:
                version = await container.drop_store.listing_version()
                body = await self.storefront.get(lambda: _render_storefront(container), version)
                response = Response(body, media_type="application/json")
            elif (flow := self.access_flows.get(id(route))) is not None:
                drop_id = scope["path_params"]["drop_id"]
                response = await flow(container, Request(scope, receive), drop_id)
            else:
                reservation_id: str = scope["path_params"]["reservation_id"]
                response = await purchase(container, Request(scope, receive), reservation_id)
        except ClientDisconnect:
            return  # nobody to answer; the body is read before anything is done
        except HTTPException:
            raise  # the request middleware's own (a body over the size limit: 413)
        except Exception as exc:
            response = error_response(exc)
        await response(scope, receive, send)

    def _route_of(self, scope: Scope) -> APIRoute | None:
        method, path = scope["method"], scope["path"]
        if method == "POST" and path.endswith("/reserve"):
            match = _RESERVE_PATH.fullmatch(path)
            if match is None or _keyed(scope):
                return None
            scope["path_params"] = {"drop_id": match.group(1)}
            return self.reserve_route
        if method == "POST" and path.endswith("/purchase"):
            match = _PURCHASE_PATH.fullmatch(path)
            if match is None or _keyed(scope):
                return None
            scope["path_params"] = {"reservation_id": match.group(2)}
            return self.purchase_routes[match.group(1)]
        if method == "GET" and path == "/api/drops" and not scope["query_string"]:
            return self.list_route
        if path.endswith(("/queue", "/queue/me", "/entries", "/entries/me")):
            return self._access_route_of(scope, method, path)
        return None

    def _access_route_of(self, scope: Scope, method: str, path: str) -> APIRoute | None:
        match = _ACCESS_PATH.fullmatch(path)
        if match is None or scope["query_string"] or _keyed(scope):
            return None
        key = (method, match.group(2), match.group(3) is not None)
        if key not in _ACCESS_FLOWS:
            return None  # GET /queue (anyone's counts): FastAPI's route
        scope["path_params"] = {"drop_id": match.group(1)}
        return self.access_routes[key]


def _keyed(scope: Scope) -> bool:
    """Whether the request has an Idempotency-Key: FastAPI's route keeps and replays it."""
    return any(name == b"idempotency-key" for name, _ in scope["headers"])


def _declared(api: FastAPI, method: str, path: str) -> APIRoute:
    """FastAPI's route for `method path` (looked for in included routers too): the lean
    path serves the route FastAPI declares, under the same metrics label."""
    pending: list[Any] = list(api.routes)
    while pending:
        route = pending.pop()
        if isinstance(route, APIRoute):
            if route.path == path and method in (route.methods or ()):
                return route
        elif (included := getattr(route, "original_router", None)) is not None:
            pending.extend(included.routes)
    raise LookupError(f"no {method} {path} route declared")


async def _render_storefront(container: Container) -> bytes:
    views = await container.drop_service.list(None)
    return orjson.dumps([render.drop(v) for v in views])
