"""The Socket.IO server: `stock_update {dropId, availableStock}` to every client.

Broadcasts go through a Redis pub/sub manager, so an event emitted by any process
reaches the clients of every process and host. What is meant for one client of this
process (its connect snapshot, a `subscribe`'s reply) is sent directly
(`ignore_queue`): it never costs a publish. Clients are limited by
app/realtime/limits.py; the manager (app/store/socketio_manager.py) keeps to its share
of RedisBudget and, on a cluster, moves to another node when its node dies.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from socketio.exceptions import ConnectionRefusedError as Refused
from starlette.requests import Request

from app.api.deps import client_ip
from app.errors import AppError
from app.events import STOCK_EVENT, StockLevel, user_room
from app.realtime.limits import SocketLimits, SubscribeRefusal
from app.runtime.engineio_sids import WorkerSocketServer
from app.runtime.socketio_fanout import check_fan_out
from app.store import keys
from app.store.channels import database_of_url, socketio_channel
from app.store.client import RedisBudget
from app.store.socketio_manager import RedisManager

log = logging.getLogger(__name__)


StockSnapshot = Callable[[], Awaitable[list[StockLevel]]]
# The user id of a valid access token; raises an AppError (401) for any other.
UserOf = Callable[[str], Awaitable[str]]
MAX_TOKEN_CHARS = 4096
DropStock = Callable[[str], Awaitable[StockLevel | None]]


def room_of(drop_id: str) -> str:
    return f"drop:{drop_id}"


def create_socket_server(
    redis_url: str | None,
    cors_origins: list[str],
    *,
    budget: RedisBudget | None = None,
    timeout: float = 5.0,
    write_only: bool = False,
    worker_id: str | None = None,
    cluster: bool = False,
    sequential_fan_out: bool = True,
) -> socketio.AsyncServer:
    """The server; with `redis_url`, on a RedisManager (one that follows the nodes of a
    cluster when `cluster`, and delivers without a task per client unless
    `sequential_fan_out` is off: SOCKET_FANOUT=library)."""
    manager = (
        RedisManager(
            redis_url,
            channel=socketio_channel(database_of_url(redis_url)),
            budget=budget or RedisBudget.split(50),
            timeout=timeout,
            write_only=write_only,
            cluster=cluster,
        )
        if redis_url
        else None
    )
    if manager is not None:
        manager.sequential = sequential_fan_out
    # With a worker id, session ids name this worker, so that any worker can hand a
    # request to the session's owner (app/realtime/session_routing.py).
    server = socketio.AsyncServer if worker_id is None else WorkerSocketServer.for_worker(worker_id)
    sio: socketio.AsyncServer = server(
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins=cors_origins or None,
        logger=False,
        engineio_logger=False,
        max_http_buffer_size=16 * 1024,
    )
    check_fan_out(sio)
    return sio


def client_address(environ: dict[str, Any], trusted_proxies: list[str]) -> str:
    """The address a connection counts against: the API's `client_ip` of its handshake.

    `client_ip` reads only the peer and the headers; a WebSocket's scope is handed to it
    as the HTTP request it began as (starlette's Request takes only http scopes).
    """
    scope = environ.get("asgi.scope") or {}
    handshake = {"type": "http", "client": scope.get("client"), "headers": scope.get("headers", [])}
    return client_ip(Request(handshake), trusted_proxies)


def register_handlers(
    sio: socketio.AsyncServer,
    snapshot: StockSnapshot,
    drop_stock: DropStock,
    limits: SocketLimits,
    trusted_proxies: list[str],
    user_of: UserOf | None = None,
) -> None:
    """On connect, send the current value of every storefront drop; `subscribe` joins a room.

    A client that connects with `auth: {token: <accessToken>}` also joins its user's room
    (`access_update` goes there); an invalid, expired, revoked or refresh token refuses
    the connection. A client address beyond SOCKET_CONNECTIONS_PER_IP is refused (a
    CONNECT_ERROR with a message); `subscribe` is limited per socket
    (app/realtime/limits.py).
    """

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        user_id = await _signed_in_user(auth, user_of)
        if not limits.admit(sid, client_address(environ, trusted_proxies)):
            raise Refused(
                "too many connections from this address", {"code": "TOO_MANY_CONNECTIONS"}
            )
        admitted = False
        try:
            try:
                for level in await snapshot():
                    await sio.emit(STOCK_EVENT, level.event(), to=sid, ignore_queue=True)
            except Exception:
                log.exception("could not send the connect snapshot")
            if user_id is not None:
                await sio.enter_room(sid, user_room(user_id))
            # A client that left while its snapshot was read gets no disconnect call from
            # python-socketio, which would then count it as connected for good.
            admitted = sio.get_environ(sid) is not None
        finally:
            if not admitted:
                limits.release(sid)
        if not admitted:
            raise Refused("the connection closed during the handshake")

    @sio.event  # type: ignore[untyped-decorator]
    async def disconnect(sid: str, reason: Any = None) -> None:
        limits.release(sid)

    @sio.event  # type: ignore[untyped-decorator]
    async def subscribe(sid: str, data: Any = None) -> dict[str, Any]:
        if not limits.may_subscribe(sid):
            return {"ok": False, "code": SubscribeRefusal.RATE_LIMITED.value}
        drop_id = data.get("dropId") if isinstance(data, dict) else None
        if not isinstance(drop_id, str) or not keys.DROP_ID_RE.match(drop_id):
            return {"ok": False, "code": "DROP_NOT_FOUND"}
        room = room_of(drop_id)
        if not limits.join(sid, room):
            return {"ok": False, "code": SubscribeRefusal.TOO_MANY_ROOMS.value}
        level: StockLevel | None = None
        try:
            # One script call on the worker's pipelined connection: no connection per call.
            level = await drop_stock(drop_id)
        finally:
            if level is None and room not in sio.rooms(sid):
                limits.left(sid, room)
        if level is None:
            return {"ok": False, "code": "DROP_NOT_FOUND"}
        await sio.enter_room(sid, room)
        await sio.emit(STOCK_EVENT, level.event(), to=sid, ignore_queue=True)
        return {"ok": True}

    @sio.event  # type: ignore[untyped-decorator]
    async def unsubscribe(sid: str, data: Any = None) -> dict[str, Any]:
        drop_id = data.get("dropId") if isinstance(data, dict) else None
        if isinstance(drop_id, str):
            await sio.leave_room(sid, room_of(drop_id))
            limits.left(sid, room_of(drop_id))
        return {"ok": True}


async def _signed_in_user(auth: Any, user_of: UserOf | None) -> str | None:
    """The user of `auth: {token}`, None without a token; refuses an invalid one."""
    token = auth.get("token") if isinstance(auth, dict) else None
    if token is None or user_of is None:
        return None
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise Refused("invalid token", {"code": "UNAUTHORIZED"})
    try:
        return await user_of(token)
    except AppError as exc:
        raise Refused(exc.detail, {"code": exc.code}) from None


async def close_socket_server(sio: socketio.AsyncServer) -> None:
    """Stop the Redis manager's listener and close its connections."""
    manager = sio.manager
    if isinstance(manager, RedisManager):
        await manager.aclose()
