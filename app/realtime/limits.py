"""What one Socket.IO client may cost a worker: connections per address, `subscribe`s per socket.

Both are counted in the worker's memory, as the connections themselves live there:
SOCKET_CONNECTIONS_PER_IP is per worker process. Nothing here touches Redis, so a
refused connection or a refused `subscribe` costs no round trip.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

MAX_ROOMS_PER_SOCKET = 50
SUBSCRIBES_PER_SECOND = 10.0
SUBSCRIBE_BURST = 10.0


class SubscribeRefusal(StrEnum):
    """The `code` of a refused `subscribe`'s reply."""

    RATE_LIMITED = "RATE_LIMITED"
    TOO_MANY_ROOMS = "TOO_MANY_ROOMS"


@dataclass
class _Bucket:
    """A token bucket: `SUBSCRIBE_BURST` at once, then `SUBSCRIBES_PER_SECOND`."""

    tokens: float
    at: float

    def take(self, now: float) -> bool:
        self.tokens = min(SUBSCRIBE_BURST, self.tokens + (now - self.at) * SUBSCRIBES_PER_SECOND)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class _Socket:
    address: str
    bucket: _Bucket
    rooms: set[str] = field(default_factory=set)


class SocketLimits:
    """Per-address connection slots and per-socket `subscribe` limits of one worker.

    Every method is synchronous: a check and its update happen in one step of the
    event loop, so a burst of connects or `subscribe`s cannot all pass one check
    before any of them counts.
    """

    def __init__(
        self, connections_per_ip: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.connections_per_ip = connections_per_ip
        self.clock = clock
        self._per_address: dict[str, int] = {}
        self._sockets: dict[str, _Socket] = {}

    def admit(self, sid: str, address: str) -> bool:
        """Take a connection slot of `address` for `sid`; False when it has none left."""
        if sid in self._sockets:
            return True
        held = self._per_address.get(address, 0)
        if held >= self.connections_per_ip:
            return False
        self._per_address[address] = held + 1
        self._sockets[sid] = _Socket(address, _Bucket(SUBSCRIBE_BURST, self.clock()))
        return True

    def release(self, sid: str) -> None:
        """Give back `sid`'s slot (idempotent: a refused or closed socket may come twice)."""
        socket = self._sockets.pop(sid, None)
        if socket is None:
            return
        left = self._per_address[socket.address] - 1
        if left:
            self._per_address[socket.address] = left
        else:
            del self._per_address[socket.address]

    def connections_of(self, address: str) -> int:
        return self._per_address.get(address, 0)

    def may_subscribe(self, sid: str) -> bool:
        """Count one `subscribe`, valid or not (each costs the worker a lookup)."""
        socket = self._sockets.get(sid)
        # A socket not admitted (its handler racing the disconnect) has nothing to spend.
        return socket is not None and socket.bucket.take(self.clock())

    def join(self, sid: str, room: str) -> bool:
        """Count `room` among `sid`'s rooms; False when it is at MAX_ROOMS_PER_SOCKET.

        Counted before the lookup that may still refuse the drop (then `left`), so that
        `subscribe`s in flight together cannot all pass the cap.
        """
        socket = self._sockets.get(sid)
        if socket is None:
            return False
        if room not in socket.rooms and len(socket.rooms) >= MAX_ROOMS_PER_SOCKET:
            return False
        socket.rooms.add(room)
        return True

    def left(self, sid: str, room: str) -> None:
        socket = self._sockets.get(sid)
        if socket is not None:
            socket.rooms.discard(room)
