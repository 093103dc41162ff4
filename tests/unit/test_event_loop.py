"""The batch-accepting event loop (app/event_loop.py), on real sockets of this host."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from app import event_loop
from app.event_loop import BatchAcceptLoop, BatchAcceptServer

PENDING = 100  # connections waiting in the kernel's accept queue at once
TURNS = 10  # loop turns they get to be accepted in; libuv alone accepts one per turn


def run(test: Callable[[BatchAcceptLoop], Awaitable[None]]) -> None:
    loop = BatchAcceptLoop()
    try:
        loop.run_until_complete(test(loop))
    finally:
        loop.close()


class Counting(asyncio.Protocol):
    """Counts its connections and echoes what it reads, upper-cased."""

    made = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Counting.made += 1
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data.upper())


def listening(backlog: int = PENDING * 2) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    return sock


def connect_blocking(address: tuple[str, int], count: int) -> list[socket.socket]:
    """Clients whose handshakes the kernel completes before the server accepts them."""
    clients = []
    for _ in range(count):
        client = socket.create_connection(address, timeout=5)
        clients.append(client)
    return clients


async def turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def test_a_queue_of_new_connections_is_accepted_within_a_few_turns() -> None:
    async def scenario(loop: BatchAcceptLoop) -> None:
        Counting.made = 0
        server = await loop.create_server(Counting, sock=listening())
        assert isinstance(server, BatchAcceptServer)
        clients = connect_blocking(server.sockets[0].getsockname(), PENDING)
        try:
            await turns(TURNS)
            assert Counting.made == PENDING
        finally:
            for client in clients:
                client.close()
            server.close()
            await server.wait_closed()

    run(scenario)


def test_an_accepted_connection_carries_data_both_ways() -> None:
    async def scenario(loop: BatchAcceptLoop) -> None:
        server = await loop.create_server(Counting, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"reserve")
        assert await reader.readexactly(7) == b"RESERVE"
        writer.close()
        server.close()
        await server.wait_closed()
        assert not server.is_serving()

    run(scenario)


def test_a_closed_server_refuses_new_connections() -> None:
    async def scenario(loop: BatchAcceptLoop) -> None:
        server = await loop.create_server(Counting, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        assert server.is_serving()
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=5).close()

    run(scenario)


def test_a_bound_socket_that_is_not_listening_yet_is_served() -> None:
    """uvicorn's supervisor binds the socket and each worker's loop makes it listen."""

    async def scenario(loop: BatchAcceptLoop) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = await loop.create_server(Counting, sock=sock, backlog=16)
        reader, writer = await asyncio.open_connection(*sock.getsockname())
        writer.write(b"drop")
        assert await reader.readexactly(4) == b"DROP"
        writer.close()
        server.close()

    run(scenario)


def test_start_serving_false_waits_for_start_serving() -> None:
    async def scenario(loop: BatchAcceptLoop) -> None:
        Counting.made = 0
        server = await loop.create_server(Counting, sock=listening(), start_serving=False)
        clients = connect_blocking(server.sockets[0].getsockname(), 3)
        await turns(TURNS)
        assert Counting.made == 0
        assert not server.is_serving()
        await server.start_serving()
        await turns(TURNS)
        assert Counting.made == 3
        for client in clients:
            client.close()
        server.close()

    run(scenario)


def test_options_it_does_not_handle_go_to_uvloop() -> None:
    async def scenario(loop: BatchAcceptLoop) -> None:
        server = await loop.create_server(Counting, "127.0.0.1", 0, reuse_port=True)
        assert not isinstance(server, BatchAcceptServer)
        server.close()
        await server.wait_closed()

    run(scenario)


class Flaky(socket.socket):
    """A listening socket whose next accepts fail with the given errors first."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[int] = []

    def accept(self) -> tuple[socket.socket, Any]:
        if self.errors:
            code = self.errors.pop(0)
            raise OSError(code, errno.errorcode[code])
        return super().accept()


def test_a_client_that_gave_up_does_not_stop_the_batch() -> None:
    async def scenario(loop: BatchAcceptLoop) -> None:
        Counting.made = 0
        sock = Flaky()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.errors = [errno.ECONNABORTED]
        server = await loop.create_server(Counting, sock=sock)
        clients = connect_blocking(sock.getsockname(), 2)
        await turns(TURNS)
        assert Counting.made == 2
        assert sock.errors == []
        for client in clients:
            client.close()
        server.close()

    run(scenario)


@pytest.mark.parametrize("code", [errno.EMFILE, errno.EINVAL])
def test_an_accept_error_pauses_accepting_then_resumes(
    monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """Out of descriptors, or a socket gone wrong: no retry on every turn of the loop."""

    async def scenario(loop: BatchAcceptLoop) -> None:
        Counting.made = 0
        resumed = asyncio.Event()
        monkeypatch.setattr(event_loop, "PAUSE_S", 0.0)
        sock = Flaky()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.errors = [code]
        server = await loop.create_server(Counting, sock=sock)
        assert isinstance(server, BatchAcceptServer)
        start = server._start
        serving_while_paused: list[bool] = []

        def start_again() -> None:
            serving_while_paused.append(server.is_serving())
            start()
            resumed.set()

        monkeypatch.setattr(server, "_start", start_again)
        clients = connect_blocking(sock.getsockname(), 1)
        await asyncio.wait_for(resumed.wait(), 5)
        await turns(TURNS)
        assert serving_while_paused == [False]
        assert Counting.made == 1
        assert server.is_serving()
        clients[0].close()
        server.close()

    run(scenario)
