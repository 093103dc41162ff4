"""The event loop `serve` runs: uvloop, with a listening socket that accepts in batches.

libuv, under uvloop, accepts one connection each time the loop polls its sockets
(since libuv 1.45). A loop under load spends each turn on the requests that are
ready, so when a crowd of clients connects at once, as in the first second of a drop,
the hundredth new client waits a hundred turns before its first request is even read
(docs/BENCHMARKS.md, "Accepting connections").

`BatchAcceptLoop.create_server` listens on `host`:`port` itself and accepts up to
`ACCEPT_BATCH` (a setting, 256 by default) connections each time the socket is
readable, as asyncio's own loop does, then hands each one to uvloop's transports.
With several workers each listens on a socket of its own (SO_REUSEPORT) beside the
one uvicorn's supervisor shares, so that the kernel spreads connections over them
(see `create_server`). uvicorn takes the loop through its `loop` setting
(`LOOP_FACTORY`).

It relies on `uvloop.Loop` being subclassable with `create_server` overridden (uvicorn
calls it with `sock=` in each worker), on its `add_reader`, `remove_reader` and
`connect_accepted_socket`, and on uvicorn's `loop` setting taking a "module:callable".
`check_event_loop()` runs at start-up and fails loudly when any is gone.
Off switch: `EVENT_LOOP=uvloop` (uvicorn's own uvloop loop). docs/RUNTIME.md.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Iterable
from importlib.metadata import version
from typing import Any

import uvloop
from uvicorn.config import Config

from app.config import get_settings

log = logging.getLogger(__name__)

PAUSE_S = 1.0  # after an accept error such as EMFILE: stop accepting this long
# The accept errors that mean "not this connection" (asyncio's own list, with EAGAIN
# handled apart): the client gave up before it was accepted, or the network dropped it.
_TRANSIENT = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR}


class BatchAcceptServer(asyncio.AbstractServer):
    """Listening sockets read by the loop's own reader callbacks, in batches."""

    def __init__(
        self,
        loop: uvloop.Loop,
        sockets: Iterable[socket.socket],
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        batch: int,
    ) -> None:
        self._loop = loop
        self._sockets = list(sockets)
        self._protocol_factory = protocol_factory
        self._batch = batch
        self._serving = False
        self._closed = asyncio.Event()
        self._handshakes: set[asyncio.Task[Any]] = set()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._sockets)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        self._start()

    def _start(self) -> None:
        if self._serving or self._closed.is_set():
            return
        self._serving = True
        for sock in self._sockets:
            sock.setblocking(False)
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _stop_reading(self) -> None:
        for sock in self._sockets:
            if sock.fileno() != -1:
                self._loop.remove_reader(sock.fileno())

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(self._batch):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # none left; the reader fires again on the next one
            except OSError as exc:
                if exc.errno in _TRANSIENT:
                    continue
                # Out of descriptors or memory, or a socket gone wrong: retrying at once
                # would fail again on every turn of the loop.
                log.error("cannot accept connections, pausing", extra={"error": str(exc)})
                self._pause()
                return
            self._adopt(conn)

    def _pause(self) -> None:
        """Stop accepting for a while: the queued clients wait in the kernel's backlog."""
        self._stop_reading()
        self._serving = False
        self._loop.call_later(PAUSE_S, self._start)

    def _adopt(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        if conn.family in (socket.AF_INET, socket.AF_INET6):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = self._loop.create_task(
            self._loop.connect_accepted_socket(self._protocol_factory, conn)
        )
        self._handshakes.add(task)
        task.add_done_callback(lambda done: self._adopted(done, conn))

    def _adopted(self, task: asyncio.Task[Any], conn: socket.socket) -> None:
        self._handshakes.discard(task)
        if task.cancelled() or task.exception() is not None:
            conn.close()  # the client left before its transport was set up

    def close(self) -> None:
        """Stop accepting and close the listening sockets; open connections stay."""
        if self._closed.is_set():
            return
        self._stop_reading()
        self._serving = False
        for sock in self._sockets:
            sock.close()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def serve_forever(self) -> None:
        self._start()
        await asyncio.Event().wait()  # until cancelled; close() stops the accepting

    async def __aenter__(self) -> BatchAcceptServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


def _listening_sockets(host: str | None, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening sockets for `host` (every interface when empty), as asyncio binds."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _own_socket_beside(shared: socket.socket, backlog: int) -> socket.socket | None:
    """A listening socket of this worker's own on the address of the workers' shared one.

    SO_REUSEPORT on both lets the bind share the port; the shared socket is never
    listened on, so every connection goes to a worker's own socket. None where that
    cannot be done; the shared socket is then served as it is.
    """
    if shared.family not in (socket.AF_INET, socket.AF_INET6) or shared.type != socket.SOCK_STREAM:
        return None
    if shared.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        return None  # listened on already: connections would wait there unaccepted
    own = socket.socket(shared.family, socket.SOCK_STREAM)
    try:
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if shared.family == socket.AF_INET6:
            v6only = shared.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            own.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        own.bind(shared.getsockname())
        own.listen(backlog)
    except OSError as exc:
        own.close()
        log.warning("workers share one listening socket", extra={"error": str(exc)})
        return None
    return own


class BatchAcceptLoop(uvloop.Loop):
    """uvloop, whose TCP servers accept in batches from sockets of their own."""

    async def create_server(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | None = None,
        port: int | None = None,
        *,
        sock: socket.socket | None = None,
        backlog: int = 100,
        ssl: Any = None,
        start_serving: bool = True,
        **kwargs: Any,
    ) -> asyncio.AbstractServer:
        """A server that accepts in batches, on `host`:`port` or beside a shared `sock`.

        uvicorn passes `sock` when several workers share one socket that its supervisor
        bound. Whichever worker the kernel wakes first accepts from a shared socket, and
        that was at times one worker for nearly every connection, at the throughput of
        one (docs/BENCHMARKS.md). So each worker listens on a socket of its own bound to
        the same address with SO_REUSEPORT, and the kernel spreads new connections
        over the workers evenly. A socket that is already listening (a process manager
        of another kind), TLS and the rarer options stay with uvloop.
        """
        if ssl is not None or kwargs or isinstance(host, list):
            return await self._uvloop_server(
                protocol_factory, host, port, sock, backlog, ssl, start_serving, **kwargs
            )
        if sock is not None:
            own = _own_socket_beside(sock, backlog)
            if own is None:
                return await self._uvloop_server(
                    protocol_factory, None, None, sock, backlog, None, start_serving
                )
            sockets = [own]
        else:
            sockets = _listening_sockets(host, port or 0, backlog)
        server = BatchAcceptServer(self, sockets, protocol_factory, get_settings().accept_batch)
        if start_serving:
            server._start()
        return server

    async def _uvloop_server(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | None,
        port: int | None,
        sock: socket.socket | None,
        backlog: int,
        ssl: Any,
        start_serving: bool,
        **kwargs: Any,
    ) -> asyncio.AbstractServer:
        options = {"backlog": backlog, "ssl": ssl, "start_serving": start_serving, **kwargs}
        if sock is not None:
            return await super().create_server(protocol_factory, sock=sock, **options)
        return await super().create_server(protocol_factory, host, port or 0, **options)


# uvicorn's `loop` setting: a custom value names the callable that makes a loop.
LOOP_FACTORY = f"{__name__}:{BatchAcceptLoop.__name__}"


# What BatchAcceptLoop calls on uvloop's loop, besides what it overrides.
_UVLOOP_METHODS = ("create_server", "add_reader", "remove_reader", "connect_accepted_socket")


def check_event_loop() -> None:
    """Fail loudly when uvloop or uvicorn no longer offer what BatchAcceptLoop relies on."""
    missing = [name for name in _UVLOOP_METHODS if not callable(getattr(uvloop.Loop, name, None))]
    if not missing:
        try:
            BatchAcceptLoop().close()  # uvloop's Loop is a compiled class: still subclassable?
        except TypeError as exc:
            missing = [f"subclassing ({exc})"]
    if missing:
        raise RuntimeError(
            f"uvloop {version('uvloop')} lacks Loop.{', Loop.'.join(missing)}, which"
            " app.runtime.event_loop relies on: EVENT_LOOP=uvloop serves on uvicorn's own"
            " uvloop loop; see docs/RUNTIME.md"
        )
    try:
        factory = Config(app="app.main:create_app", loop=LOOP_FACTORY).get_loop_factory()
    except (Exception, SystemExit):  # uvicorn exits when it cannot import the value
        factory = None
    if factory is not BatchAcceptLoop:
        raise RuntimeError(
            f"uvicorn {version('uvicorn')} does not take its loop setting as a"
            f" 'module:callable' ({LOOP_FACTORY}), which app.runtime.event_loop relies on:"
            " EVENT_LOOP=uvloop serves on uvicorn's own uvloop loop; see docs/RUNTIME.md"
        )
