"""The batch-accepting event loop (app/runtime/event_loop.py), on real sockets of this host."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from app.runtime import event_loop
from app.runtime.event_loop import BatchAcceptLoop, BatchAcceptServer

PENDING = 100  # connections waiting in the kernel's accept queue at once
TURNS = 10  # loop turns they get to be accepted in; libuv alone accepts one per turn


@pytest.fixture(autouse=True)
def accept_batch(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """The ACCEPT_BATCH setting the loop reads (256, the default, unless a test sets it)."""

    def use(batch: int) -> None:
        settings = SimpleNamespace(accept_batch=batch)
        monkeypatch.setattr(event_loop, "get_settings", lambda: settings)

    use(256)
    return use


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


async def serving(loop: BatchAcceptLoop) -> asyncio.AbstractServer:
    """A server on 127.0.0.1, as a single-worker `serve` makes it."""
    return await loop.create_server(Counting, "127.0.0.1", 0, backlog=PENDING * 2)


async def serving_on(loop: BatchAcceptLoop, sock: socket.socket) -> BatchAcceptServer:
    """A batch-accepting server on a socket of the test's own making."""
    server = BatchAcceptServer(loop, [sock], Counting, event_loop.get_settings().accept_batch)
    await server.start_serving()
    return server


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


def hang_up(clients: list[socket.socket], server: asyncio.AbstractServer) -> None:
    for client in clients:
        client.close()
    server.close()


async def assert_echoes(address: tuple[str, int], data: bytes) -> None:
    """A connection to `address` gets `data` back upper-cased (the `Counting` echo)."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(data)
    assert await reader.readexactly(len(data)) == data.upper()
    writer.close()


def test_a_queue_of_new_connections_is_accepted_within_a_few_turns() -> None:
    async def scenario(loop: BatchAcceptLoop) -> None:
        Counting.made = 0
        server = await serving(loop)
        assert isinstance(server, BatchAcceptServer)
        clients = connect_blocking(server.sockets[0].getsockname(), PENDING)
        try:
            await turns(TURNS)
            assert Counting.made == PENDING
        finally:
            hang_up(clients, server)
            await server.wait_closed()

    run(scenario)


def test_a_batch_of_one_accepts_one_connection_per_turn(
    accept_batch: Callable[[int], None],
) -> None:
    """ACCEPT_BATCH=1 behaves as libuv alone does: the queue drains a turn at a time."""
    accept_batch(1)

    async def scenario(loop: BatchAcceptLoop) -> None:
        Counting.made = 0
        server = await serving(loop)
        clients = connect_blocking(server.sockets[0].getsockname(), PENDING)
        try:
            await turns(TURNS)
            assert 1 <= Counting.made <= TURNS
            await turns(PENDING * 2)
            assert Counting.made == PENDING  # every one, in the end
        finally:
            hang_up(clients, server)

    run(scenario)


def test_an_accepted_connection_carries_data_both_ways() -> None:
    async def scenario(loop: BatchAcceptLoop) -> None:
        server = await loop.create_server(Counting, "127.0.0.1", 0)
        await assert_echoes(server.sockets[0].getsockname(), b"reserve")
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


def supervisor_socket() -> socket.socket:
    """What uvicorn's supervisor hands every worker: bound, not listening."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def test_workers_sharing_a_socket_each_listen_on_their_own_and_share_the_crowd() -> None:
    made: list[int] = [0, 0]

    def counting(worker: int) -> Callable[[], asyncio.Protocol]:
        def protocol() -> asyncio.Protocol:
            made[worker] += 1
            return asyncio.Protocol()

        return protocol

    async def scenario(loop: BatchAcceptLoop) -> None:
        shared = supervisor_socket()
        workers = [
            await loop.create_server(counting(w), sock=shared, backlog=PENDING) for w in (0, 1)
        ]
        clients: list[socket.socket] = []
        try:
            assert all(isinstance(server, BatchAcceptServer) for server in workers)
            assert all(server.sockets[0] is not shared for server in workers)
            clients = connect_blocking(shared.getsockname(), PENDING)
            await turns(TURNS)
            assert sum(made) == PENDING
            assert min(made) > 0  # all 100 on one of two sockets: odds of 2 in 2**100
        finally:
            for client in clients:
                client.close()
            for server in workers:
                server.close()
                await server.wait_closed()
            shared.close()

    run(scenario)


def test_a_shared_socket_that_is_already_listening_stays_with_uvloop() -> None:
    """Connections queued on it would wait there if the workers listened elsewhere."""

    async def scenario(loop: BatchAcceptLoop) -> None:
        sock = supervisor_socket()
        sock.listen(16)
        server = await loop.create_server(Counting, sock=sock, backlog=16)
        assert not isinstance(server, BatchAcceptServer)
        await assert_echoes(sock.getsockname(), b"drop")
        server.close()

    run(scenario)


def test_start_serving_false_waits_for_start_serving() -> None:
    async def scenario(loop: BatchAcceptLoop) -> None:
        Counting.made = 0
        server = await loop.create_server(Counting, "127.0.0.1", 0, start_serving=False)
        clients = connect_blocking(server.sockets[0].getsockname(), 3)
        await turns(TURNS)
        assert Counting.made == 0
        assert not server.is_serving()
        await server.start_serving()
        await turns(TURNS)
        assert Counting.made == 3
        hang_up(clients, server)

    run(scenario)


def test_options_it_does_not_handle_go_to_uvloop() -> None:
    async def scenario(loop: BatchAcceptLoop) -> None:
        server = await loop.create_server(Counting, "127.0.0.1", 0, reuse_port=True)
        assert not isinstance(server, BatchAcceptServer)
        server.close()
        await server.wait_closed()

    run(scenario)


class Flaky(socket.socket):
    """A listening socket on 127.0.0.1 whose next accepts fail with `errors` first."""

    def __init__(self, errors: list[int]) -> None:
        super().__init__()
        self.errors = errors
        self.bind(("127.0.0.1", 0))
        self.listen(16)

    def accept(self) -> tuple[socket.socket, Any]:
        if self.errors:
            code = self.errors.pop(0)
            raise OSError(code, errno.errorcode[code])
        return super().accept()


def test_a_client_that_gave_up_does_not_stop_the_batch() -> None:
    async def scenario(loop: BatchAcceptLoop) -> None:
        Counting.made = 0
        sock = Flaky([errno.ECONNABORTED])
        server = await serving_on(loop, sock)
        clients = connect_blocking(sock.getsockname(), 2)
        await turns(TURNS)
        assert Counting.made == 2
        assert sock.errors == []
        hang_up(clients, server)

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
        sock = Flaky([code])
        server = await serving_on(loop, sock)
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
        hang_up(clients, server)

    run(scenario)
