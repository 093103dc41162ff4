"""The Socket.IO server: `stock_update {dropId, availableStock}` to every client.

Broadcasts go through a Redis pub/sub manager, so an event emitted by any process
reaches the clients of every process and host. What is meant for one client of this
process (its connect snapshot, a `subscribe`'s reply) is sent directly
(`ignore_queue`): it never costs a publish. Clients are limited by
app/realtime/limits.py, and the manager's Redis connections by RedisBudget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import socketio
from engineio import packet as eio_packet
from redis.exceptions import RedisError
from socketio import packet as sio_packet
from socketio.async_pubsub_manager import AsyncPubSubManager
from socketio.exceptions import ConnectionRefusedError as Refused
from starlette.requests import Request

from app.api.deps import client_ip
from app.realtime.limits import SocketLimits, SubscribeRefusal
from app.runtime.engineio_sids import WorkerSocketServer
from app.store import keys
from app.store.channels import database_of_url, socketio_channel
from app.store.client import RedisBudget, create_redis

log = logging.getLogger(__name__)

STOCK_EVENT = "stock_update"

StockSnapshot = Callable[[], Awaitable[list[tuple[str, int]]]]
DropStock = Callable[[str], Awaitable[int | None]]


def room_of(drop_id: str) -> str:
    return f"drop:{drop_id}"


class SequentialFanOut(socketio.AsyncManager):  # type: ignore[misc]
    """Local delivery of an event without a task per recipient.

    python-socketio's manager starts one task per client for every emit and waits for
    all of them; with a thousand clients that is most of a push's cost. Handing a
    packet to a client only appends it to that client's send queue, so a plain loop
    does the same work with no task, no scheduling and no wait. Emits that expect
    acknowledgements keep the library's path.
    """

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: str | None = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: str | None = None,
        **kwargs: Any,
    ) -> None:
        room = to or room
        if callback is not None or namespace not in self.rooms:
            await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs
            )
            return
        if isinstance(data, tuple):
            args = list(data)
        else:
            args = [] if data is None else [data]
        skipped = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        encoded = self.server.packet_class(
            sio_packet.EVENT, namespace=namespace, data=[event, *args]
        ).encode()
        parts = encoded if isinstance(encoded, list) else [encoded]
        packets = [eio_packet.Packet(eio_packet.MESSAGE, part) for part in parts]
        for sid, eio_sid in list(self.get_participants(namespace, room)):
            if sid in skipped:
                continue
            for pkt in packets:
                try:
                    await self.server._send_eio_packet(eio_sid, pkt)
                except Exception:  # one client's broken socket must not stop the others
                    log.debug("could not queue an event for a client", exc_info=True)


class RedisManager(AsyncPubSubManager, SequentialFanOut):  # type: ignore[misc]
    """The pub/sub manager on Redis, on connections made once and counted in RedisBudget.

    python-socketio's AsyncRedisManager publishes through a client whose pool has no
    bound (a burst of emits opened a connection each and kept it) and makes a new
    client on every reconnect. This one implements the pub/sub manager's two backend
    hooks, `_publish` and `_listen`, on two clients of its own: a blocking pool for
    the publishes, and one connection for the subscription, reopened in place when lost.
    """

    name = "sneakerdrop-redis"

    def __init__(
        self,
        url: str,
        *,
        channel: str,
        budget: RedisBudget,
        timeout: float,
        write_only: bool = False,
    ) -> None:
        super().__init__(channel=channel, write_only=write_only)
        self.publisher = create_redis(url, max_connections=budget.socketio_publish, timeout=timeout)
        self.listener = create_redis(url, max_connections=budget.socketio_listener, timeout=timeout)

    async def _publish(self, data: Any) -> None:
        # As the library's: a publish that fails is logged, not raised to the emitter
        # (its local clients already have the event).
        try:
            await self.publisher.publish(self.channel, self.json.dumps(data))
        except (RedisError, OSError) as exc:
            log.warning("could not publish a Socket.IO event: %s", type(exc).__name__)

    async def _listen(self) -> AsyncIterator[str]:
        backoff = 0.1
        while True:
            try:
                async with self.listener.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    backoff = 0.1
                    while True:
                        message = await pubsub.get_message(timeout=LISTEN_SECONDS)
                        if message and message.get("type") == "message":
                            yield str(message["data"])
            except (RedisError, OSError) as exc:
                # Leaving the `async with` closed the lost connection: the pool of one
                # reopens it, never a second one.
                log.warning("Socket.IO listener lost Redis: %s; retrying", type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def aclose(self) -> None:
        """Stop the listener and close both clients (python-socketio has no API for it)."""
        listener = getattr(self, "thread", None)
        if isinstance(listener, asyncio.Task):
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
        for client in (self.listener, self.publisher):
            with contextlib.suppress(Exception):
                await client.aclose()


LISTEN_SECONDS = 1.0  # one wait for a message; the subscription's health check runs between


def create_socket_server(
    redis_url: str | None,
    cors_origins: list[str],
    *,
    budget: RedisBudget | None = None,
    timeout: float = 5.0,
    write_only: bool = False,
    worker_id: str | None = None,
) -> socketio.AsyncServer:
    manager = (
        RedisManager(
            redis_url,
            channel=socketio_channel(database_of_url(redis_url)),
            budget=budget or RedisBudget.split(50),
            timeout=timeout,
            write_only=write_only,
        )
        if redis_url
        else None
    )
    # With a worker id, session ids name this worker, so that any worker can hand a
    # request to the session's owner (app/realtime/session_routing.py).
    server = socketio.AsyncServer if worker_id is None else WorkerSocketServer.for_worker(worker_id)
    return server(
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins=cors_origins or None,
        logger=False,
        engineio_logger=False,
        max_http_buffer_size=16 * 1024,
    )


def client_address(environ: dict[str, Any], trusted_proxies: list[str]) -> str:
    """The address a connection counts against: the API's `client_ip` of its handshake.

    `client_ip` reads only the peer and the headers; a WebSocket's scope is handed to it
    as the HTTP request it began as (starlette's Request takes only http scopes).
    """
    scope = environ.get("asgi.scope") or {}
    handshake = {"type": "http", "client": scope.get("client"), "headers": scope.get("headers", [])}
    return client_ip(Request(handshake), trusted_proxies)


def _stock(drop_id: str, available: int) -> dict[str, Any]:
    return {"dropId": drop_id, "availableStock": available}


def register_handlers(
    sio: socketio.AsyncServer,
    snapshot: StockSnapshot,
    drop_stock: DropStock,
    limits: SocketLimits,
    trusted_proxies: list[str],
) -> None:
    """On connect, send the current value of every storefront drop; `subscribe` joins a room.

    A client address beyond SOCKET_CONNECTIONS_PER_IP is refused (a CONNECT_ERROR
    with a message); `subscribe` is limited per socket (app/realtime/limits.py).
    """

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if not limits.admit(sid, client_address(environ, trusted_proxies)):
            raise Refused(
                "too many connections from this address", {"code": "TOO_MANY_CONNECTIONS"}
            )
        admitted = False
        try:
            try:
                for drop_id, available in await snapshot():
                    await sio.emit(
                        STOCK_EVENT, _stock(drop_id, available), to=sid, ignore_queue=True
                    )
            except Exception:
                log.exception("could not send the connect snapshot")
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
        available: int | None = None
        try:
            # One script call on the worker's pipelined connection: no connection per call.
            available = await drop_stock(drop_id)
        finally:
            if available is None and room not in sio.rooms(sid):
                limits.left(sid, room)
        if available is None:
            return {"ok": False, "code": "DROP_NOT_FOUND"}
        await sio.enter_room(sid, room)
        await sio.emit(STOCK_EVENT, _stock(drop_id, available), to=sid, ignore_queue=True)
        return {"ok": True}

    @sio.event  # type: ignore[untyped-decorator]
    async def unsubscribe(sid: str, data: Any = None) -> dict[str, Any]:
        drop_id = data.get("dropId") if isinstance(data, dict) else None
        if isinstance(drop_id, str):
            await sio.leave_room(sid, room_of(drop_id))
            limits.left(sid, room_of(drop_id))
        return {"ok": True}


async def close_socket_server(sio: socketio.AsyncServer) -> None:
    """Stop the Redis manager's listener and close its connections."""
    manager = sio.manager
    if isinstance(manager, RedisManager):
        await manager.aclose()
