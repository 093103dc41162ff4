"""Workers of the real app that SIGKILL themselves at a failpoint of the purchase.

A worker costs ~2 s to start from nothing (the imports), so this is a fork server: run
as `python -m tests.support.failpoint_server` with the settings in its environment, as
`sneakerdrop serve` reads them, it imports the app once, then forks one worker per
request. A worker is the real thing: `app.main.create_app()` served by uvicorn (the
loop and HTTP protocol `serve` uses, lifespan on, background loops running), with real
stores. Its `container.hold_service.fault_hook` kills the process (SIGKILL, from the
process itself) when the k-th purchase reaches the chosen failpoint, while the others
are wherever they are.

Lines on stdin (one worker at a time; the next after the last one exited):
    <failpoint> <k>
Lines on stdout:
    worker <pid> <port>             its socket listens; requests queue until it serves
    victim <pid> <failpoint> <id>   from the worker, just before it kills itself; <id> is
                                    the reservation id of the purchase at the failpoint
    exit <pid> <status>             -<signal> or the exit code

The listening socket is made here and handed to the worker alone, so a request still in
its backlog when the worker dies is refused (reset) and never served by the next one.

`FailpointServer` drives one from the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FAILPOINTS = ("after_claim", "before_commit", "after_record")
_PURCHASE_PATH = re.compile(r"/api/(?:reservations|drops)/([^/]+)/purchase")
_reservation: ContextVar[str] = ContextVar("reservation", default="?")
WORKER_SECONDS = 120  # a worker lives a second or so; SIGALRM ends one left behind


# --- the fork server (runs in its own process) ---------------------------------------


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())  # one write: lines of several processes never mix


class _NamesTheReservation:
    """ASGI wrapper: the reservation id of a purchase, for the fault hook to name."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (match := _PURCHASE_PATH.fullmatch(scope["path"])):
            _reservation.set(match.group(1))  # seen by everything this request runs
        await self.app(scope, receive, send)


def _run_worker(sock: socket.socket, failpoint: str, k: int) -> None:
    import uvicorn

    import app.main
    from app.config import get_settings
    from app.runtime.event_loop import LOOP_FACTORY
    from app.runtime.http_limits import serve_protocol

    reached = 0

    async def kill_at(point: str) -> None:
        nonlocal reached
        if point != failpoint:
            return
        reached += 1
        if reached == k:
            _say(f"victim {os.getpid()} {point} {_reservation.get()}")
            os.kill(os.getpid(), signal.SIGKILL)

    build = app.main.build_container

    async def build_armed(settings: Any) -> Any:
        container = await build(settings)
        container.hold_service.fault_hook = kill_at
        return container

    app.main.build_container = build_armed  # the lifespan builds it: armed before serving
    settings = get_settings()
    config = uvicorn.Config(
        _NamesTheReservation(app.main.create_app(settings)),
        lifespan="on",
        loop=LOOP_FACTORY if settings.event_loop == "batch-accept" else "uvloop",
        http=serve_protocol(enabled=settings.http_limits == "on"),
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=1,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _fork_worker(failpoint: str, k: int) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.alarm(WORKER_SECONDS)  # whatever happens to the test, it ends
            _run_worker(sock, failpoint, k)
            code = 0
        except BaseException as exc:  # reported, then the child ends
            print(f"worker failed: {exc!r}", file=sys.stderr, flush=True)
        finally:
            os._exit(code)
    sock.close()  # the worker's alone: it dies with it
    _say(f"worker {pid} {port}")
    return pid


def _prepare() -> None:
    """Import here what every worker would import (~2 s), and freeze it all out of the
    garbage collector's way: a worker's collections then do not touch (and copy) the
    pages it shares with this process. A fork then starts in milliseconds."""
    import gc

    import fastapi.telemetry._runtime  # noqa: F401
    import uvicorn

    import app.main  # noqa: F401
    from app.config import get_settings
    from app.runtime import event_loop  # noqa: F401
    from app.runtime.http_limits import serve_protocol

    settings = get_settings()
    # uvicorn imports its protocols and lifespan as it loads a config.
    uvicorn.Config(
        lambda: None,
        lifespan="on",
        http=serve_protocol(enabled=settings.http_limits == "on"),
        log_config=None,
    ).load()
    gc.collect()
    gc.freeze()


def serve_forever() -> None:
    _prepare()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopped by closing stdin
    for line in sys.stdin:
        failpoint, k = line.split()
        assert failpoint in FAILPOINTS, failpoint
        pid = _fork_worker(failpoint, int(k))
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        _say(f"exit {pid} {code}")


# --- the driver (in the test process) -------------------------------------------------


@dataclass
class Worker:
    pid: int
    url: str


@dataclass
class Death:
    status: int  # -9 when it was killed
    failpoint: str | None  # where, as the worker said before dying
    reservation_id: str | None  # the purchase that was there


class FailpointServer:
    """A running fork server; one worker at a time."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self.running: Worker | None = None  # started, its exit not seen yet

    async def _line(self, within: float) -> list[str]:
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(within):
                raw = await self.process.stdout.readline()
        except TimeoutError:
            raise AssertionError(
                f"the fork server said nothing for {within}s\n{self.tail()}"
            ) from None
        if not raw:
            raise AssertionError(f"the fork server ended\n{self.tail()}")
        return raw.decode().split()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    async def start_worker(self, failpoint: str, k: int, within: float = 20.0) -> Worker:
        """A worker that kills itself when the k-th purchase reaches `failpoint`."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"{failpoint} {k}\n".encode())
        await self.process.stdin.drain()
        words = await self._line(within)
        assert words[0] == "worker", words
        self.running = Worker(int(words[1]), f"http://127.0.0.1:{words[2]}")
        return self.running

    async def death(self, worker: Worker, within: float = 20.0) -> Death:
        """Wait for the worker to end; it is killed (and the test fails) if it outlives
        `within` seconds."""
        failpoint = reservation_id = None
        try:
            while True:
                words = await self._line(within)
                if words[0] == "victim" and int(words[1]) == worker.pid:
                    failpoint, reservation_id = words[2], words[3]
                elif words[0] == "exit" and int(words[1]) == worker.pid:
                    self.running = None
                    return Death(int(words[2]), failpoint, reservation_id)
                else:
                    raise AssertionError(f"unexpected line {words}")
        except AssertionError:
            self.kill_running()
            raise

    def kill_running(self) -> None:
        """SIGKILL the worker still running, if any (the fork server's child, by its id)."""
        if self.running is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.running.pid, signal.SIGKILL)
            self.running = None


@contextlib.asynccontextmanager
async def failpoint_server(env: dict[str, str], log: Path) -> AsyncIterator[FailpointServer]:
    """A fork server with `env` as its settings; stopped (and its last worker too) after."""
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.failpoint_server",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=output,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        )
    server = FailpointServer(process, log)
    try:
        yield server
    finally:
        server.kill_running()
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


if __name__ == "__main__":
    serve_forever()
