"""Hand each Engine.IO request to the worker that holds its session.

python-engineio keeps a session in the memory of the worker that made its handshake.
Workers share one listening address (and hosts share a balancer), so a client's next
poll, or its upgrade to WebSocket, lands on any worker; one that does not know the
session answers 400 and the client drops the connection (26 of 30 default
socket.io-client clients failed on two workers before this module).

Every session id names its worker (app/realtime/session_ids.py), and every worker
listens on an address of its own (app/realtime/internal_listener.py) that it
registers in Redis (app/store/workers.py). This middleware, in front of the whole
app, reads `sid` on `/socket.io/` requests: its own sessions are served here; any
other is proxied to the owner (HTTP long-poll GET/POST streamed, WebSocket pumped
both ways). The owner's listener serves its sessions and never forwards: no loops.
An owner that is gone answers what Engine.IO answers for an unknown session, so the
client reconnects, to whichever worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import parse_qs

from redis.asyncio import Redis

from app import metrics
from app.background.stopping import pause
from app.config import Settings
from app.realtime.internal_listener import InternalListener, start_listener
from app.realtime.socket_proxy import SocketProxy
from app.runtime.engineio_sids import check_session_ids
from app.runtime.http_limits import serve_protocol
from app.runtime.session_ids import owner_of
from app.store.workers import WorkerRegistry

log = logging.getLogger(__name__)

PATH = "/socket.io/"
REGISTRATION_TTL_S = 30
REFRESH_S = 10
POOL_PER_OWNER = 4096  # open forwarded long-polls and WebSockets to one worker, at most
CONNECT_TIMEOUT_S = 5.0  # to connect to an owner, or wait for a free connection to it
OWNER_CACHE_MAX = 4096
Scope = dict[str, Any]
Receive = Any
Send = Any


class SessionRouting:
    """The ASGI app a worker serves: `app`, with requests of other workers' sessions proxied."""

    def __init__(self, app: Any, sio: Any, settings: Settings, worker_id: str | None) -> None:
        """`worker_id` None: routing is off (SOCKET_FORWARD_HOST=off), `app` is served as is."""
        self.app = app
        self.api = getattr(app, "api", None)  # the FastAPI app inside, for tests and tools
        self.sio = sio
        self.worker_id = worker_id
        self._forward_host = _forward_host(settings)
        self._redis_url = settings.redis_url
        self._http_limits = settings.http_limits == "on"
        self._owners: dict[str, str] = {}  # worker id -> host:port; never changes for an id
        self._registry: WorkerRegistry | None = None
        self._proxy: SocketProxy | None = None
        self._listener: InternalListener | None = None
        self._stopping = asyncio.Event()
        self._refresh: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._proxy is not None and scope["type"] in ("http", "websocket"):
            owner = _owner(scope)
            if owner is not None and owner != self.worker_id:
                await self._forward(owner, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def internal(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The internal listener's app: Socket.IO only, served here, never forwarded."""
        if scope["type"] in ("http", "websocket") and scope["path"].startswith(PATH):
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _forward(self, owner: str, scope: Scope, receive: Receive, send: Send) -> None:
        assert self._proxy is not None
        transport = "websocket" if scope["type"] == "websocket" else "polling"
        address = await self._address(owner)
        if scope["type"] == "websocket":
            outcome = await self._proxy.websocket(address, scope, receive, send)
        else:
            outcome = await self._proxy.http(address, scope, receive, send)
        if outcome == "unreachable":
            self._owners.pop(owner, None)
        metrics.SOCKETIO_FORWARDED.labels(transport, outcome).inc()

    async def _address(self, owner: str) -> str | None:
        address = self._owners.get(owner)
        if address is not None or self._registry is None:
            return address
        try:
            address = await self._registry.address_of(owner)
        except Exception:  # Redis away: the session cannot be found; the client reconnects
            log.warning("could not look up a Socket.IO session's worker", exc_info=True)
            return None
        if address is not None:
            if len(self._owners) >= OWNER_CACHE_MAX:
                self._owners.clear()
            self._owners[owner] = address
        return address

    async def start(self, redis: Redis) -> None:
        """Listen on this worker's own address, register it and get ready to forward."""
        if self.worker_id is None:
            return
        check_session_ids(self.sio, self.worker_id)
        self._listener = await start_listener(
            self.internal,
            self._forward_host,
            self._redis_url,
            serve_protocol(enabled=self._http_limits),
        )
        read_timeout = float(self.sio.eio.ping_interval + self.sio.eio.ping_timeout) + 10
        self._proxy = SocketProxy(POOL_PER_OWNER, CONNECT_TIMEOUT_S, read_timeout, self.worker_id)
        self._registry = WorkerRegistry(redis)
        await self._registry.register(self.worker_id, self._listener.address, REGISTRATION_TTL_S)
        self._refresh = asyncio.create_task(self._keep_registered(), name="worker-registration")
        log.info(
            "Socket.IO sessions of this worker are reachable at %s",
            self._listener.address,
            extra={"worker": self.worker_id},
        )

    async def _keep_registered(self) -> None:
        assert self._registry is not None
        assert self._listener is not None
        assert self.worker_id is not None
        while not self._stopping.is_set():
            await pause(self._stopping, REFRESH_S)
            if self._stopping.is_set():
                return
            try:
                await self._registry.register(
                    self.worker_id, self._listener.address, REGISTRATION_TTL_S
                )
            except Exception:  # a Redis blip: the next refresh comes before the TTL ends
                log.warning("could not refresh this worker's address", exc_info=True)

    async def stop(self) -> None:
        self._stopping.set()
        if self._refresh is not None:
            await asyncio.wait({self._refresh}, timeout=5)
        if self._registry is not None and self.worker_id is not None:
            with contextlib.suppress(Exception):
                await self._registry.deregister(self.worker_id)
        if self._listener is not None:
            await self._listener.stop()
        if self._proxy is not None:
            await self._proxy.close()
        self._proxy = None


def _forward_host(settings: Settings) -> str:
    return (settings.socket_forward_host or settings.host).strip()


def routing_enabled(settings: Settings) -> bool:
    """Whether this worker hands requests over (SOCKET_FORWARD_HOST is not `off`)."""
    return _forward_host(settings).lower() != "off"


def _owner(scope: Scope) -> str | None:
    """The worker id in a `/socket.io/` request's `sid`, if it has one."""
    query: bytes = scope.get("query_string", b"")
    if b"sid=" not in query or not scope["path"].startswith(PATH):
        return None
    sids = parse_qs(query.decode("latin-1")).get("sid")
    return owner_of(sids[0]) if sids else None
