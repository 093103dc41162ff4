"""The Socket.IO server: `stock_update {dropId, availableStock}` to every client.

Emits go through python-socketio's Redis manager, so an event emitted by any
process reaches the clients of every process and host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from app.store import keys
from app.store.channels import database_of_url, socketio_channel

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


class RedisManager(socketio.AsyncRedisManager, SequentialFanOut):  # type: ignore[misc]
    """python-socketio's Redis manager, keeping the clients it replaces so they get closed.

    The manager connects on its first publish and again when its listener starts (at
    the first Socket.IO connection); the second connect replaces the first client
    without closing it. The replaced ones are kept and closed at shutdown.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retired: list[Any] = []

    def _redis_connect(self) -> None:
        previous = (self.redis, self.pubsub)
        super()._redis_connect()
        self.retired.extend(old for old in previous if old is not None)


def create_socket_server(
    redis_url: str | None, cors_origins: list[str], *, write_only: bool = False
) -> socketio.AsyncServer:
    manager = (
        RedisManager(
            redis_url,
            channel=socketio_channel(database_of_url(redis_url)),
            write_only=write_only,
        )
        if redis_url
        else None
    )
    return socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins=cors_origins or None,
        logger=False,
        engineio_logger=False,
        max_http_buffer_size=16 * 1024,
    )


def register_handlers(
    sio: socketio.AsyncServer, snapshot: StockSnapshot, drop_stock: DropStock
) -> None:
    """On connect, send the current value of every storefront drop; `subscribe` joins a room."""

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        try:
            for drop_id, available in await snapshot():
                await sio.emit(
                    STOCK_EVENT, {"dropId": drop_id, "availableStock": available}, to=sid
                )
        except Exception:
            log.exception("could not send the connect snapshot")

    @sio.event  # type: ignore[untyped-decorator]
    async def subscribe(sid: str, data: Any = None) -> dict[str, Any]:
        drop_id = data.get("dropId") if isinstance(data, dict) else None
        if not isinstance(drop_id, str) or not keys.DROP_ID_RE.match(drop_id):
            return {"ok": False, "code": "DROP_NOT_FOUND"}
        available = await drop_stock(drop_id)
        if available is None:
            return {"ok": False, "code": "DROP_NOT_FOUND"}
        await sio.enter_room(sid, room_of(drop_id))
        await sio.emit(STOCK_EVENT, {"dropId": drop_id, "availableStock": available}, to=sid)
        return {"ok": True}

    @sio.event  # type: ignore[untyped-decorator]
    async def unsubscribe(sid: str, data: Any = None) -> dict[str, Any]:
        drop_id = data.get("dropId") if isinstance(data, dict) else None
        if isinstance(drop_id, str):
            await sio.leave_room(sid, room_of(drop_id))
        return {"ok": True}


async def close_socket_server(sio: socketio.AsyncServer) -> None:
    """Stop the Redis manager's listener and close its connections (python-socketio has no API)."""
    manager = sio.manager
    listener = getattr(manager, "thread", None)
    if isinstance(listener, asyncio.Task):
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await listener
    resources = [getattr(manager, "pubsub", None), getattr(manager, "redis", None)]
    resources += getattr(manager, "retired", [])
    for resource in resources:
        if resource is not None:
            with contextlib.suppress(Exception):
                await resource.aclose()
