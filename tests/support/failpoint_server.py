"""Workers of the real app that SIGKILL themselves at a failpoint of the purchase.

A worker costs ~2 s to start from nothing (the imports), so this is a fork server: run
as `python -m tests.support.failpoint_server` with the settings in its environment, as
`sneakerdrop serve` reads them, it imports the app and makes it once (as a preloading
server does), then forks one worker per request. A worker is the real thing:
`app.main.create_app()` served by uvicorn (the loop and HTTP protocol `serve` uses),
its lifespan run in the worker (the container: pools, scripts, the drops mirrored, the
background loops), with real stores. Its `container.hold_service.fault_hook` kills the
process (SIGKILL, from the process itself) when the k-th purchase reaches the chosen
failpoint, while the others are wherever they are.

Lines on stdin (each forks a worker at once: several may run side by side, each on
its own holds):
    <failpoint> <k>
Lines on stdout:
    worker <pid> <port>             its socket listens; requests queue until it serves
    victim <pid> <failpoint> <id>   from the worker, just before it kills itself; <id> is
                                    the reservation id of the purchase at the failpoint
    exit <pid> <status>             -<signal> or the exit code

The listening socket is made here and handed to the worker alone, so a request still in
its backlog when the worker dies is refused (reset) and never served by another one.

`FailpointServer` drives one from the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import selectors
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FAILPOINTS = ("after_claim", "statement_sent", "after_record")
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


@dataclass
class _Armed:
    """The failpoint of this worker (set in it after the fork), and how often a purchase
    reached it so far."""

    failpoint: str = ""
    k: int = 0
    reached: int = 0


_armed = _Armed()


async def _kill_at(point: str) -> None:
    """The fault hook: SIGKILL this process when the k-th purchase reaches the failpoint."""
    if point != _armed.failpoint:
        return
    _armed.reached += 1
    if _armed.reached == _armed.k:
        _say(f"victim {os.getpid()} {point} {_reservation.get()}")
        os.kill(os.getpid(), signal.SIGKILL)


def _load() -> Any:
    """The uvicorn config every worker serves: `create_app()` made once, here, before
    the forks. Made in each worker, the app's route models (FastAPI builds them at the
    first request) and the ORM's mappers were built anew each time: about 40 % of a
    worker's CPU."""
    import uvicorn
    from fastapi.routing import iter_route_contexts
    from sqlalchemy.orm import configure_mappers

    import app.main
    from app.config import get_settings
    from app.runtime.event_loop import LOOP_FACTORY
    from app.runtime.http_limits import serve_protocol

    build = app.main.build_container

    async def build_armed(settings: Any) -> Any:
        container = await build(settings)
        container.hold_service.fault_hook = _kill_at
        return container

    app.main.build_container = build_armed  # the lifespan builds it: armed before serving
    settings = get_settings()
    application = app.main.create_app(settings)
    assert application.api is not None
    list(iter_route_contexts(application.api.router.routes))  # what a first request builds
    configure_mappers()
    config = uvicorn.Config(
        _NamesTheReservation(application),
        lifespan="on",
        loop=LOOP_FACTORY if settings.event_loop == "batch-accept" else "uvloop",
        http=serve_protocol(enabled=settings.http_limits == "on"),
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=1,
    )
    config.load()  # uvicorn imports its protocols and lifespan as it loads a config
    return config


def _serve(config: Any, sock: socket.socket, failpoint: str, k: int) -> None:
    """The worker: the app's lifespan, then serving on `sock` until it dies."""
    import uvicorn

    _armed.failpoint, _armed.k = failpoint, k
    uvicorn.Server(config).run(sockets=[sock])


def _fork_worker(config: Any, failpoint: str, k: int, inherited: list[int]) -> int:
    """Fork one worker; `inherited` are this process's descriptors a worker has no use
    for (the selector's, the other workers' pidfds), closed in the child."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for fd in inherited:
                os.close(fd)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.alarm(WORKER_SECONDS)  # whatever happens to the test, it ends
            _serve(config, sock, failpoint, k)
            code = 0
        except BaseException as exc:  # reported, then the child ends
            print(f"worker failed: {exc!r}", file=sys.stderr, flush=True)
        finally:
            os._exit(code)
    sock.close()  # the worker's alone: it dies with it
    _say(f"worker {pid} {port}")
    return pid


def _prepare() -> Any:
    """Import what every worker would import (~2 s), build the app (`_load`), and freeze
    it all out of the garbage collector's way: a worker's collections then do not touch
    (and copy) the pages it shares with this process. A fork then starts in
    milliseconds."""
    import gc

    import fastapi.telemetry._runtime  # noqa: F401

    config = _load()
    gc.collect()
    gc.freeze()
    return config


def _reap(pid: int) -> None:
    """Collect an ended worker and say how it ended."""
    _, status = os.waitpid(pid, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    _say(f"exit {pid} {code}")


def serve_forever() -> None:
    """Fork a worker per line on stdin, report each exit as it happens; once stdin is
    closed, wait for the workers still running and end."""
    config = _prepare()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopped by closing stdin
    stdin = sys.stdin.fileno()
    pending = b""
    running: dict[int, int] = {}  # pidfd -> pid
    with selectors.DefaultSelector() as selector:
        selector.register(stdin, selectors.EVENT_READ)
        reading = True
        while reading or running:
            for key, _ in selector.select():
                if key.fd != stdin:  # a pidfd: that worker ended
                    selector.unregister(key.fd)
                    os.close(key.fd)
                    _reap(running.pop(key.fd))
                    continue
                chunk = os.read(stdin, 4096)
                if not chunk:
                    selector.unregister(stdin)
                    reading = False
                    continue
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    failpoint, k = line.decode().split()
                    assert failpoint in FAILPOINTS, failpoint
                    inherited = [selector.fileno(), *running]
                    pid = _fork_worker(config, failpoint, int(k), inherited)
                    pidfd = os.pidfd_open(pid)
                    running[pidfd] = pid
                    selector.register(pidfd, selectors.EVENT_READ)


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


@dataclass
class _Running:
    """What the fork server said of one worker so far."""

    ended: asyncio.Future[int]  # its exit status
    victim: tuple[str, str] | None = None  # (failpoint, reservation id)


class FailpointServer:
    """A running fork server; any number of workers at once, each started, served and
    awaited by whoever started it."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self.running: dict[int, _Running] = {}  # pid -> started, its exit not seen yet
        self._starting: list[asyncio.Future[Worker]] = []  # in the order they were asked
        self._lock = asyncio.Lock()  # a request written and its future queued, as one step
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        """Hand each line of the fork server to the worker it is about. When the server
        ends (or says something unexpected), whoever still waits fails."""
        assert self.process.stdout is not None
        problem = "the fork server ended"
        while raw := await self.process.stdout.readline():
            words = raw.decode().split() or [""]
            if words[0] == "worker":
                pid = int(words[1])
                self.running[pid] = _Running(asyncio.get_running_loop().create_future())
                self._starting.pop(0).set_result(Worker(pid, f"http://127.0.0.1:{words[2]}"))
            elif words[0] == "victim" and int(words[1]) in self.running:
                self.running[int(words[1])].victim = (words[2], words[3])
            elif words[0] == "exit" and int(words[1]) in self.running:
                self.running[int(words[1])].ended.set_result(int(words[2]))
            else:
                problem = f"unexpected line {words}"
                break
        failure = AssertionError(f"{problem}\n{self.tail()}")
        waiting: list[asyncio.Future[Any]] = [*self._starting]
        waiting += [running.ended for running in self.running.values()]
        for future in waiting:
            if not future.done():
                future.set_exception(failure)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    async def start_worker(self, failpoint: str, k: int, within: float = 20.0) -> Worker:
        """A worker that kills itself when the k-th purchase reaches `failpoint`."""
        assert self.process.stdin is not None
        started: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()
        async with self._lock:
            if self._reader.done():
                raise AssertionError(f"the fork server ended\n{self.tail()}")
            self._starting.append(started)
            self.process.stdin.write(f"{failpoint} {k}\n".encode())
            await self.process.stdin.drain()
        try:
            async with asyncio.timeout(within):
                return await started
        except TimeoutError:
            raise AssertionError(f"no worker started in {within}s\n{self.tail()}") from None

    async def death(self, worker: Worker, within: float = 20.0) -> Death:
        """Wait for the worker to end; it is killed (and the test fails) if it outlives
        `within` seconds."""
        found = self.running[worker.pid]
        try:
            async with asyncio.timeout(within):
                status = await asyncio.shield(found.ended)
        except TimeoutError:
            self.kill(worker.pid)
            raise AssertionError(f"worker {worker.pid} still ran after {within}s") from None
        del self.running[worker.pid]
        failpoint, reservation_id = found.victim or (None, None)
        return Death(status, failpoint, reservation_id)

    def kill(self, pid: int) -> None:
        """SIGKILL a worker (the fork server's child, by its id) if it still runs."""
        if pid in self.running and not self.running[pid].ended.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kill_running(self) -> None:
        """SIGKILL every worker still running."""
        for pid in list(self.running):
            self.kill(pid)

    async def stop_reading(self) -> None:
        """Once the fork server has ended (a worker still alive would keep its stdout
        open): what it said last is of no use now."""
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


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
        await server.stop_reading()


if __name__ == "__main__":
    serve_forever()
