"""One shared, pipelined Redis connection per process for the Lua scripts.

redis-py takes a connection from its pool for every command, arms a timer for the
read, checks the connection's health and walks its retry and parser layers: under
load that was about a third of a reserve's CPU. Here every caller writes its
command onto the same connection and awaits its own reply; Redis answers one
connection's commands in the order they were sent, so the replies are matched to
the callers by a queue (as ioredis and StackExchange.Redis do). Commands issued in
the same event-loop turn leave in one write.

Failure handling, in place of the per-command machinery:
- one watchdog timer, armed for the oldest waiting command: when it has waited
  `timeout` seconds, the connection is closed and every waiting caller gets a
  TimeoutError (503 upstream);
- a lost connection fails every waiting caller with a ConnectionError; the next
  command opens a new connection (callers that arrive meanwhile share the attempt);
- a caller that is cancelled leaves its slot in the queue, so later replies still
  reach their own callers.

Only request/reply commands belong here (EVALSHA); pub/sub, blocking commands and
transactions stay on redis-py. Redis Cluster uses redis-py throughout.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import AuthenticationError, DataError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

_INCOMPLETE = object()  # hiredis: no complete reply buffered yet


def pack_command(args: tuple[Any, ...]) -> bytes:
    """RESP encoding of one command: str as UTF-8, int and float as text, bytes as is."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            value = arg.encode()
        elif isinstance(arg, bytes | bytearray | memoryview):
            value = bytes(arg)
        elif isinstance(arg, int) and not isinstance(arg, bool):
            value = b"%d" % arg
        elif isinstance(arg, float):
            value = repr(arg).encode()
        else:
            raise DataError(f"cannot send {type(arg).__name__} to Redis: {arg!r}")
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)


def _error(reply: ResponseError) -> ResponseError:
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return reply


class _Endpoint:
    """Where and how to connect: the URL read by redis-py's own parser, so the scripts'
    connection and the app's redis-py client take a URL the same way."""

    def __init__(self, url: str) -> None:
        options = parse_url(url)  # ValueError for a scheme other than redis, rediss, unix
        self.username: str | None = options.get("username")
        self.password: str | None = options.get("password")
        self.path: str | None = options.get("path")
        self.host: str = options.get("host", "localhost")
        self.port: int = options.get("port", 6379)
        self.db: int = options.get("db", 0)
        self.tls: ssl.SSLContext | None = None
        if options.get("connection_class") is SSLConnection:
            self.tls = ssl.create_default_context()
            if str(options.get("ssl_cert_reqs", "required")).lower() in {"none", "optional"}:
                self.tls.check_hostname = False
                self.tls.verify_mode = ssl.CERT_NONE

    def handshake(self) -> list[tuple[Any, ...]]:
        commands: list[tuple[Any, ...]] = []
        if self.password is not None:
            if self.username:
                commands.append(("AUTH", self.username, self.password))
            else:
                commands.append(("AUTH", self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        return commands

    def __str__(self) -> str:
        return self.path or f"{self.host}:{self.port}"


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: PipelinedConnection) -> None:
        self.owner = owner
        self.reader = hiredis.Reader(
            replyError=ResponseError, encoding="utf-8", notEnoughData=_INCOMPLETE
        )

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.owner.pending
        while True:
            try:
                reply = self.reader.gets()
            except Exception as exc:  # a protocol or decoding error: the stream is lost
                self.owner.broken(RedisConnectionError(f"unreadable reply from Redis: {exc}"))
                return
            if reply is _INCOMPLETE:
                return
            if not pending:
                self.owner.broken(RedisConnectionError("Redis sent a reply nobody asked for"))
                return
            waiter, _ = pending.popleft()
            if waiter.done():  # its caller was cancelled
                continue
            if isinstance(reply, ResponseError):
                waiter.set_exception(_error(reply))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.lost(self, exc)


class PipelinedConnection:
    """`await execute("EVALSHA", sha, n, *keys, *args)` over one shared connection."""

    def __init__(
        self, url: str, *, timeout: float = 5.0, connect_timeout: float | None = None
    ) -> None:
        self.endpoint = _Endpoint(url)
        self.timeout = timeout
        # Never longer than a command may take: behind a partition the connect hangs too.
        self.connect_timeout = min(3.0, timeout) if connect_timeout is None else connect_timeout
        self.pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._outgoing: list[bytes] = []
        self._flush_scheduled = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the connection's, from connect

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def execute(self, *args: Any) -> Any:
        if not self.connected:
            await self._connect()
        return await self._send(pack_command(args))

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        self.broken(RedisConnectionError("the connection was closed"))

    # --- sending --------------------------------------------------------------------

    def _send(self, command: bytes) -> asyncio.Future[Any]:
        # The connection's own loop: asyncio.get_running_loop() costs a getpid() system
        # call on Python 3.11, once per command.
        loop = self._loop
        assert loop is not None, "commands are only sent once connected"
        waiter: asyncio.Future[Any] = loop.create_future()
        now = loop.time()
        self.pending.append((waiter, now))
        self._outgoing.append(command)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        if self._watchdog is None:
            self._watchdog = loop.call_at(now + self.timeout, self._check_overdue)
        return waiter

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._outgoing:
            return
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        if self._transport is None or self._transport.is_closing():
            self.broken(RedisConnectionError("Redis connection lost before the command was sent"))
            return
        self._transport.write(data)

    def _check_overdue(self) -> None:
        self._watchdog = None
        if not self.pending:
            return
        loop = self._loop
        assert loop is not None
        oldest = self.pending[0][1]
        if loop.time() - oldest >= self.timeout:
            self.broken(RedisTimeoutError(f"Redis did not answer within {self.timeout:g} s"))
            return
        self._watchdog = loop.call_at(oldest + self.timeout, self._check_overdue)

    # --- connecting -------------------------------------------------------------------

    async def _connect(self) -> None:
        if self._closed:
            raise RedisConnectionError("the connection was closed")
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open())
            # Every waiter sees the outcome through `shield`; this marks it as seen
            # even when they were all cancelled.
            self._connecting.add_done_callback(lambda done: done.cancelled() or done.exception())
        await asyncio.shield(self._connecting)

    async def _open(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        endpoint = self.endpoint
        try:
            async with asyncio.timeout(self.connect_timeout):
                if endpoint.path is not None:
                    transport, protocol = await loop.create_unix_connection(
                        lambda: _Protocol(self), endpoint.path
                    )
                else:
                    transport, protocol = await loop.create_connection(
                        lambda: _Protocol(self), endpoint.host, endpoint.port, ssl=endpoint.tls
                    )
        except TimeoutError as exc:
            raise RedisTimeoutError(f"Timeout connecting to Redis at {endpoint}") from exc
        except OSError as exc:
            raise RedisConnectionError(f"Error connecting to Redis at {endpoint}: {exc}") from exc
        self._transport = transport
        self._protocol = protocol
        # Queued together, so no caller's command can slip in between AUTH and SELECT.
        replies = [self._send(pack_command(command)) for command in endpoint.handshake()]
        try:
            for reply in replies:
                await reply
        except ResponseError as exc:
            refused = AuthenticationError(f"Redis refused the connection: {exc}")
            self.broken(refused)
            raise refused from exc

    # --- failing ----------------------------------------------------------------------

    def broken(self, error: Exception) -> None:
        """Close the connection and fail every waiting caller with `error`."""
        transport, self._transport, self._protocol = self._transport, None, None
        if transport is not None:
            transport.abort()
        self._outgoing.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        pending, self.pending = self.pending, deque()
        for waiter, _ in pending:
            if not waiter.done():
                waiter.set_exception(error)

    def lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return  # an old connection, already failed over
        reason = f": {exc}" if exc else ""
        self.broken(RedisConnectionError(f"Redis closed the connection{reason}"))
