"""A TCP proxy in front of PostgreSQL that slows, or cuts, what the app sends it.

The app under test is given the proxy's address as its DATABASE_URL; the test's own
checks (`sneakerdrop check`, a locker session) go to PostgreSQL directly. Each chunk
the client sends is forwarded after a random delay in `delay_ms` (uniform, in
milliseconds), in order: a chunk never overtakes the one before it, so the protocol
stays intact and only its timing changes. Replies come back undelayed.

`cut()` is PostgreSQL failing: every open connection is reset (both sides), and new
connections are refused until `heal()`. The backend of a cut connection sees its client
gone and rolls back whatever transaction it had open, as after a network failure.

It runs in the test's event loop, as the app does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field

from sqlalchemy.engine import make_url

from app.embedded.common import _LOOPBACK, free_port

CHUNK = 65536


@dataclass
class ProxyStats:
    connections: int = 0
    chunks: int = 0
    delayed_ms: float = 0.0  # the sum of the delays given to client chunks
    cut_connections: int = 0
    refused: int = 0
    delays: list[float] = field(default_factory=list)  # each chunk's delay, in ms


class _Link:
    """One client connection and its upstream connection."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.client_reader, self.client_writer = client
        self.server_reader, self.server_writer = server
        self.tasks: list[asyncio.Task[None]] = []

    def reset(self) -> None:
        """Abort both sides at once (RST, no goodbye), as a failed network does."""
        for writer in (self.client_writer, self.server_writer):
            writer.transport.abort()


class LatencyProxy:
    def __init__(self, upstream_url: str, *, seed: int | None = None) -> None:
        url = make_url(upstream_url)
        self.upstream_url = upstream_url
        self.upstream_host = url.host or _LOOPBACK
        self.upstream_port = url.port or 5432
        self.port = free_port()
        self.delay_ms: tuple[float, float] = (0.0, 0.0)
        self.stats = ProxyStats()
        self.random = random.Random(seed)
        self.links: set[_Link] = set()
        self.server: asyncio.Server | None = None
        self.refusing = False

    @property
    def url(self) -> str:
        """The upstream URL with the proxy's address: what the app is given."""
        proxied = make_url(self.upstream_url).set(host=_LOOPBACK, port=self.port)
        return str(proxied.render_as_string(hide_password=False))

    def slow(self, low_ms: float, high_ms: float) -> None:
        """Delay each chunk from now on by uniform(low_ms, high_ms); stats start afresh."""
        self.delay_ms = (low_ms, high_ms)
        self.stats = ProxyStats(connections=self.stats.connections)

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._serve, _LOOPBACK, self.port, reuse_address=True
        )
        self.refusing = False

    async def cut(self) -> None:
        """PostgreSQL fails: reset every open connection, refuse new ones."""
        self.refusing = True
        server, self.server = self.server, None
        if server is not None:
            server.close()
        for link in list(self.links):
            link.reset()
            self.stats.cut_connections += 1
        await self._settle()
        if server is not None:
            await server.wait_closed()

    async def heal(self) -> None:
        """Accept connections again (on the same port)."""
        await self.start()

    async def close(self) -> None:
        await self.cut()

    async def _settle(self) -> None:
        tasks = [task for link in list(self.links) for task in link.tasks]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.stats.refused += 1
            writer.transport.abort()
            return
        try:
            upstream = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            self.stats.refused += 1
            writer.transport.abort()
            return
        link = _Link((reader, writer), upstream)
        self.links.add(link)
        self.stats.connections += 1
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        link.tasks = [
            asyncio.create_task(self._read_client(link, queue)),
            asyncio.create_task(self._write_server(link, queue)),
            asyncio.create_task(self._copy_back(link)),
        ]
        try:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            link.reset()
            self.links.discard(link)

    def _delay(self) -> float:
        low, high = self.delay_ms
        delay = self.random.uniform(low, high) if high > 0 else 0.0
        self.stats.chunks += 1
        self.stats.delayed_ms += delay
        self.stats.delays.append(delay)
        return delay

    async def _read_client(
        self, link: _Link, queue: asyncio.Queue[tuple[float, bytes] | None]
    ) -> None:
        due = 0.0
        try:
            while data := await link.client_reader.read(CHUNK):
                # Each chunk waits its own delay, and never leaves before the one ahead.
                due = max(time.monotonic() + self._delay() / 1000, due)
                queue.put_nowait((due, data))
        except OSError:
            pass
        finally:
            queue.put_nowait(None)

    async def _write_server(
        self, link: _Link, queue: asyncio.Queue[tuple[float, bytes] | None]
    ) -> None:
        try:
            while (item := await queue.get()) is not None:
                due, data = item
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)  # the injected latency itself
                link.server_writer.write(data)
                await link.server_writer.drain()
            with contextlib.suppress(OSError):
                link.server_writer.write_eof()
        except OSError:
            link.reset()

    async def _copy_back(self, link: _Link) -> None:
        try:
            while data := await link.server_reader.read(CHUNK):
                link.client_writer.write(data)
                await link.client_writer.drain()
        except OSError:
            pass
        finally:
            link.reset()
