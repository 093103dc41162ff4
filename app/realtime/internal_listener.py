"""Each worker's own address: a uvicorn server on a port of its own, inside the worker.

uvicorn's workers share one listening address, so nobody can reach one chosen worker
through it. Every worker therefore also listens on `(SOCKET_FORWARD_HOST, a free port)`,
where the other workers and hosts hand it the Socket.IO requests of its sessions.

It is a second uvicorn server run as a task of the worker's event loop, one that leaves
the signal handlers to the worker's main server (app/runtime/uvicorn_listener.py);
`start_listener()` fails loudly if the handlers changed anyway.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from app.runtime.uvicorn_listener import QuietServer, check_quiet_server

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
GRACEFUL_S = 2  # forwarded long-polls still open when the worker stops
# Longer than the forwarding client's idle keep-alive (15 s, aiohttp's default), so that
# the client always closes an idle connection first and never reuses one being closed.
KEEP_ALIVE_S = 75
_WILDCARDS = {"", "0.0.0.0", "::"}
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class InternalListener:
    server: uvicorn.Server
    task: asyncio.Task[None]
    address: str  # host:port, as the other workers and hosts connect to it

    async def stop(self) -> None:
        self.server.should_exit = True
        done, _ = await asyncio.wait({self.task}, timeout=STOP_TIMEOUT_S)
        if not done:
            self.task.cancel()
            await asyncio.wait({self.task}, timeout=1)


def _bound(host: str) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        # Listening already, so app/runtime/event_loop.py's loop serves it as it is instead of
        # opening a SO_REUSEPORT socket beside it (that is for the shared public socket).
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def advertised_host(bind_host: str, redis_url: str | None) -> str:
    """The host part others use: the bound host, or for a wildcard the local address
    of this machine's route to Redis (the network every worker and host shares)."""
    if bind_host not in _WILDCARDS:
        return bind_host
    target = urlsplit(redis_url or "")
    if target.scheme not in ("redis", "rediss") or not target.hostname:
        return "127.0.0.1"
    port = target.port or 6379
    family = socket.getaddrinfo(target.hostname, port, type=socket.SOCK_DGRAM)[0][0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((target.hostname, port))  # UDP: chooses a route, sends nothing
        local: str = probe.getsockname()[0]
    return local


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start_listener(
    app: Any, bind_host: str, redis_url: str | None, http: Any
) -> InternalListener:
    """Serve `app` on (bind_host, a free port) in this event loop until `stop()`.

    `http` is uvicorn's protocol setting, the one `serve` uses (app/runtime/http_limits.py):
    this address is as reachable as the public one when HOST is a wildcard."""
    check_quiet_server()
    sock = _bound(bind_host)
    port: int = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="off",  # the worker's own server runs the app's lifespan
        interface="asgi3",  # a bound method: uvicorn would guess ASGI 2
        http=http,
        server_header=False,
        log_config=None,  # keep the worker's logging as it is
        log_level=None,
        access_log=False,
        proxy_headers=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_S,
    )
    server = QuietServer(config)
    handlers = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    task = asyncio.create_task(server.serve(sockets=[sock]), name="socketio-internal-listener")
    listener = InternalListener(server, task, _join(advertised_host(bind_host, redis_url), port))
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:  # uvicorn has no start event; it starts within a few turns
        if task.done() or time.monotonic() > deadline:
            await listener.stop()
            sock.close()
            raise RuntimeError(f"the internal Socket.IO listener did not start on {bind_host}")
        await asyncio.sleep(0.005)
    if {sig: signal.getsignal(sig) for sig in _SIGNALS} != handlers:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        await listener.stop()
        raise RuntimeError(
            "uvicorn's internal listener replaced the signal handlers (uvicorn's "
            "capture_signals() changed); see docs/RUNTIME.md (SOCKET_FORWARD_HOST=off)"
        )
    return listener
