"""Local delivery of a Socket.IO event without a task per recipient (python-socketio internal).

python-socketio's manager (`AsyncManager.emit`) starts one task per client for every
emit and waits for all of them; with a thousand clients that is most of a push's
cost. Handing a packet to a client only appends it to that client's send queue, so
`SequentialFanOut.emit` does the same work in a plain loop, calling the server's
`_send_eio_packet(eio_sid, packet)` (an internal: the coroutine the library's own
emit calls per client). Emits that expect acknowledgements keep the library's path.

`check_fan_out()` runs at start-up and fails loudly when the internal is gone.
Off switch: `SOCKET_FANOUT=library` (python-socketio's own emit). docs/RUNTIME.md.
"""

from __future__ import annotations

import inspect
import logging
from importlib.metadata import version
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

log = logging.getLogger(__name__)

INTERNAL = "_send_eio_packet"


class SequentialFanOut(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's manager, whose emits without a callback loop over the recipients."""

    sequential = True  # False: the library's emit (SOCKET_FANOUT=library)

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
        if not self.sequential or callback is not None or namespace not in self.rooms:
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


def check_fan_out(sio: Any) -> None:
    """Fail loudly when the server lacks the coroutine the sequential fan-out calls."""
    manager = getattr(sio, "manager", None)
    if not isinstance(manager, SequentialFanOut) or not manager.sequential:
        return
    send = getattr(sio, INTERNAL, None)
    if send is None or not inspect.iscoroutinefunction(send):
        raise RuntimeError(
            f"python-socketio {version('python-socketio')} has no coroutine"
            f" AsyncServer.{INTERNAL}(eio_sid, packet), which app.runtime.socketio_fanout"
            " relies on: SOCKET_FANOUT=library uses the library's own emit; see docs/RUNTIME.md"
        )
