"""SocketLimits: connection slots per address, the `subscribe` rate and room cap per socket."""

from __future__ import annotations

from app.realtime.limits import (
    MAX_ROOMS_PER_SOCKET,
    SUBSCRIBE_BURST,
    SUBSCRIBES_PER_SECOND,
    SocketLimits,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_address_gets_its_slots_and_gets_them_back() -> None:
    limits = SocketLimits(connections_per_ip=2)
    assert limits.admit("a", "10.0.0.1")
    assert limits.admit("b", "10.0.0.1")
    assert not limits.admit("c", "10.0.0.1")
    assert limits.admit("d", "10.0.0.2")  # another address has its own
    limits.release("a")
    limits.release("a")  # twice (a refused socket, then its disconnect): counted once
    assert limits.connections_of("10.0.0.1") == 1
    assert limits.admit("c", "10.0.0.1")
    for sid in ("b", "c", "d"):
        limits.release(sid)
    assert limits.connections_of("10.0.0.1") == limits.connections_of("10.0.0.2") == 0


def test_subscribes_are_a_burst_then_a_rate() -> None:
    clock = Clock()
    limits = SocketLimits(connections_per_ip=1, clock=clock)
    limits.admit("s", "10.0.0.1")
    granted = [limits.may_subscribe("s") for _ in range(30)]
    assert granted.count(True) == SUBSCRIBE_BURST
    clock.now += 1.0
    granted = [limits.may_subscribe("s") for _ in range(30)]
    assert granted.count(True) == SUBSCRIBES_PER_SECOND
    assert not limits.may_subscribe("unknown")  # a socket never admitted gets nothing


def test_a_socket_joins_at_most_the_cap_of_rooms() -> None:
    limits = SocketLimits(connections_per_ip=1)
    limits.admit("s", "10.0.0.1")
    for n in range(MAX_ROOMS_PER_SOCKET):
        assert limits.join("s", f"drop:{n}")
    assert not limits.join("s", "drop:one-more")
    assert limits.join("s", "drop:0")  # a room it is in is no new room
    limits.left("s", "drop:0")
    assert limits.join("s", "drop:one-more")
