"""Real servers and real Socket.IO clients for the real-time tests.

The in-process httpx ASGITransport cannot carry WebSockets, so these tests run
uvicorn for real: in this process (`serve_in_process`, on a pre-bound socket) or
as `sneakerdrop serve` subprocesses (`start_serve_process`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import socketio
import uvicorn

from app.config import Settings
from app.container import Container
from app.main import create_app
from app.services.auth import Session
from app.store import keys
from tests.support.factories import PASSWORD, auth

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0
EVENT_TIMEOUT = 5.0
STOP_TIMEOUT = 8.0  # uvicorn's graceful shutdown (5 s at most) plus the lifespan's


@dataclass
class LiveServer:
    url: str
    container: Container


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def uvicorn_on_free_port(asgi: Any) -> tuple[uvicorn.Server, socket.socket, int]:
    """A uvicorn server for `asgi` (lifespan on, quiet) and the local socket it will serve."""
    sock = _bound_socket()
    port: int = sock.getsockname()[1]
    config = uvicorn.Config(
        asgi,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config), sock, port


@asynccontextmanager
async def serve_in_process(settings: Settings) -> AsyncIterator[LiveServer]:
    """uvicorn serving create_app(settings) as a task of this event loop."""
    asgi = create_app(settings)
    server, sock, port = uvicorn_on_free_port(asgi)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn-{port}")
    try:
        await wait_until(lambda: _started(server, task), START_TIMEOUT, "uvicorn to start")
        yield LiveServer(f"http://127.0.0.1:{port}", asgi.api.state.container)
    finally:
        server.should_exit = True
        try:
            await _stopped(task, asgi.api)
        finally:
            sock.close()


async def _stopped(task: asyncio.Task[None], api: Any) -> None:
    """Wait for uvicorn and the app's lifespan to stop; fail (after cleaning up) if they hang.

    A background loop whose cancellation was swallowed (Python 3.11's asyncio.wait_for,
    used inside redis-py, can return a result instead of raising CancelledError) keeps
    running, and the lifespan shutdown waits on it forever.
    """
    done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT)
    if done:
        task.result()
        return
    background = getattr(api.state, "background", None)
    stuck = [t for t in getattr(background, "tasks", []) if not t.done()]
    for _ in range(50):  # cancel again until they end, so nothing leaks into other tests
        for t in stuck:
            t.cancel()
        if (await asyncio.wait({task}, timeout=0.1))[0]:
            break
    if not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=5)
    raise AssertionError(
        f"the server did not stop within {STOP_TIMEOUT}s: background task(s) "
        f"{[t.get_name() for t in stuck]} survived BackgroundTasks.stop()'s cancel"
    )


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()  # re-raise a start-up failure
        raise AssertionError("uvicorn stopped before it started")
    return server.started


async def wait_until(condition: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Poll `condition` until true; fail after `within` seconds (for states with no event)."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def quiesce(container: Container, within: float = 5.0) -> None:
    """Wait until no drop has a stock change that is still to be pushed (no `dirty` flag)."""

    async def clean() -> bool:
        ids = cast(list[str], await container.redis.zrange(keys.DROP_INDEX, 0, -1))
        for drop_id in ids:
            if await container.redis.hget(keys.DropKeys(drop_id).drop, "dirty"):
                return False
        return True

    await wait_until(clean, within, "pending stock pushes to drain")


async def users(container: Container, count: int) -> list[Session]:
    """`count` signed-up users (through the auth service, as the API would)."""
    stamp = time.monotonic_ns()
    return list(
        await asyncio.gather(
            *(
                container.auth_service.signup(f"rt{stamp}-{i}@example.com", PASSWORD, None)
                for i in range(count)
            )
        )
    )


async def available_via_get(http: httpx.AsyncClient, drop_id: str) -> int:
    response = await http.get(f"/api/drops/{drop_id}")
    assert response.status_code == 200, response.text
    value: int = response.json()["availableStock"]
    return value


async def reserve(http: httpx.AsyncClient, drop_id: str, token: str) -> dict[str, Any]:
    response = await http.post(f"/api/drops/{drop_id}/reserve", headers=auth(token))
    assert response.status_code == 201, response.text
    held: dict[str, Any] = response.json()
    return held


@dataclass(frozen=True)
class StockEvent:
    at: float  # time.monotonic() when it arrived
    drop_id: str
    available: int


@dataclass
class StockListener:
    """A python-socketio client that records every `stock_update` it receives, in order."""

    sio: socketio.AsyncClient = field(
        default_factory=lambda: socketio.AsyncClient(reconnection=False)
    )
    queue: asyncio.Queue[StockEvent] = field(default_factory=asyncio.Queue)
    seen: list[StockEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sio.on("stock_update", self._on_stock)

    async def _on_stock(self, data: dict[str, Any]) -> None:
        assert set(data) == {"dropId", "availableStock"}, data
        event = StockEvent(time.monotonic(), data["dropId"], data["availableStock"])
        self.seen.append(event)
        self.queue.put_nowait(event)

    async def connect(self, url: str, transports: list[str] | None = None) -> None:
        await self.sio.connect(
            url, transports=transports or ["websocket"], socketio_path="socket.io", wait_timeout=5
        )

    async def close(self, server: LiveServer | None = None) -> None:
        if not self.sio.connected:
            return
        if server is None or self.sio.transport() != "polling":
            await self.sio.disconnect()
            return
        # python-engineio's server leaves the pending long-poll GET unanswered after a
        # client's CLOSE, and its client waits ~30 s for that GET. So the server drops the
        # client instead (its CLOSE answers the GET), and the client's write loop, left
        # waiting by that path, is woken the way its own disconnect() would.
        eio = self.sio.eio
        assert server.container.sio is not None
        await server.container.sio.eio.disconnect(eio.sid)

        async def closed() -> bool:
            return bool(eio.state == "disconnected")

        await wait_until(closed, EVENT_TIMEOUT, "the polling client to close")
        eio.queue.put_nowait(None)
        await asyncio.wait_for(eio.read_loop_task, EVENT_TIMEOUT)

    async def next(self, within: float = EVENT_TIMEOUT) -> StockEvent:
        return await asyncio.wait_for(self.queue.get(), within)

    async def wait_for(self, drop_id: str, value: int, within: float = EVENT_TIMEOUT) -> StockEvent:
        """The next event of `drop_id` carrying `value`; other events are consumed on the way."""
        deadline = time.monotonic() + within
        skipped: list[StockEvent] = []
        while True:
            left = deadline - time.monotonic()
            try:
                event = await asyncio.wait_for(self.queue.get(), max(left, 0.001))
            except TimeoutError:
                raise AssertionError(
                    f"no stock_update {drop_id}={value} within {within}s; got {skipped}"
                ) from None
            if event.drop_id == drop_id and event.available == value:
                return event
            skipped.append(event)

    async def call(self, event: str, data: Any) -> Any:
        return await self.sio.call(event, data, timeout=EVENT_TIMEOUT)


@asynccontextmanager
async def listening(
    server: LiveServer | str, transports: list[str] | None = None
) -> AsyncIterator[StockListener]:
    listener = StockListener()
    await listener.connect(server if isinstance(server, str) else server.url, transports)
    try:
        yield listener
    finally:
        await listener.close(None if isinstance(server, str) else server)


# --- `sneakerdrop serve` subprocesses ---------------------------------------------------


def _serve_argv(port: int) -> list[str]:
    script = Path(sys.executable).with_name("sneakerdrop")
    if script.exists():
        return [str(script), "serve", "--port", str(port)]
    return [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]


async def start_serve_process(
    port: int, env: dict[str, str], log: Path
) -> asyncio.subprocess.Process:
    with log.open("wb") as output:
        return await asyncio.create_subprocess_exec(
            *_serve_argv(port),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            cwd=log.parent,  # no stray .env
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            start_new_session=True,
        )


def log_text(log: Path) -> str:
    return log.read_text(errors="replace")


async def wait_ready(process: asyncio.subprocess.Process, url: str, log: Path) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:

        async def ready() -> bool:
            if process.returncode is not None:
                raise AssertionError(f"serve exited with {process.returncode}:\n{log_text(log)}")
            try:
                return (await http.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(ready, START_TIMEOUT, f"{url}/readyz")


async def stop_serve_processes(
    processes: list[asyncio.subprocess.Process], grace: float = 15.0
) -> list[int | None]:
    """SIGTERM to each, then each exit code; None for one killed after `grace` seconds.

    Every process is stopped, whatever happens to the others. A hang here has been a
    background loop that lost its cancellation, so the lifespan shutdown waits for it
    forever: see _stopped().
    """

    async def stop(process: asyncio.subprocess.Process) -> int | None:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            process.kill()
            await process.wait()
            return None

    return list(await asyncio.gather(*(stop(p) for p in processes)))
