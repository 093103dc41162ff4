"""Store processes a fault test owns: started on a free port, killed and restarted on it.

The app under test keeps its URLs, so a restart must come back on the same port.
PostgreSQL reuses the embedded `_Postgres` (initdb, start and stop as a system user
when root) and only adds a restart on its port. Valkey is launched here with the
embedded server's options (append-only file, `Ex` keyspace events, `noeviction`),
because a test needs to SIGKILL it and restart it from an empty or an older data
folder.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from app.embedded.common import (
    _LOOPBACK,
    DATABASE_NAME,
    POSTGRES_ROLE,
    _log_tail,
    _valkey_server_bin,
    free_port,
)
from app.embedded.postgres import _Postgres
from app.embedded.valkey import server_options

START_SECONDS = 20.0


class OwnedValkey:
    """A valkey-server with its data in `root/valkey`, always on one port."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "valkey"
        self.logfile = root / "valkey.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{_LOOPBACK}:{self.port}/0"

    def client(self) -> redis.Redis:
        """A plain synchronous client, for commands the test itself sends to the server."""
        return redis.Redis(host=_LOOPBACK, port=self.port, socket_timeout=5, decode_responses=True)

    def start(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        args = [str(_valkey_server_bin()), *server_options(self.port, self.dir, self.logfile)]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_SECONDS
        with self.client() as conn:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"valkey-server exited\n{_log_tail(self.logfile)}")
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    if conn.ping():
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"valkey-server not ready\n{_log_tail(self.logfile)}")
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no AOF flush, no goodbye to clients, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a frozen one too
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its connections open and answers nothing (a hang)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self, *, restore_from: Path | None = None, empty: bool = False) -> None:
        """Start again on the same port: with its data, none, or a snapshot's."""
        assert self.process is None, "kill() first"
        if empty or restore_from is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        if restore_from is not None:
            shutil.copytree(restore_from, self.dir)
        self.start()

    def snapshot(self, into: Path) -> Path:
        """A copy of the data as it is now: rewrite the AOF to a fresh base, then copy it."""
        with self.client() as conn:
            conn.bgrewriteaof()
            deadline = time.monotonic() + START_SECONDS
            while True:
                info = conn.info("persistence")
                if not (info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("BGREWRITEAOF did not finish")
                time.sleep(0.02)
            assert info["aof_last_bgrewrite_status"] == "ok", info
        shutil.copytree(self.dir, into)
        return into


class OwnedPostgres:
    """The embedded PostgreSQL of `root`, stoppable and restartable on its first port."""

    def __init__(self, root: Path) -> None:
        self.server = _Postgres(root, timeout=30.0)
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{POSTGRES_ROLE}@{_LOOPBACK}:{self.port}/{DATABASE_NAME}"

    def start(self) -> None:
        self.port = self.server.start()

    @property
    def running(self) -> bool:
        return self.server._running_postmaster() is not None

    def begin_fast_shutdown(self) -> None:
        """SIGINT to the postmaster, what `pg_ctl stop -m fast` sends, without waiting:
        open sessions are cut, new connections refused. `stop()` waits for the end."""
        postmaster = self.server._running_postmaster()
        assert postmaster is not None, "PostgreSQL is not running"
        postmaster.send_signal(signal.SIGINT)

    def stop(self) -> None:
        """`pg_ctl stop -m fast`, waiting until the server is gone."""
        self.server.stop()

    def restart(self) -> None:
        """`pg_ctl start` on the port the app knows."""
        assert self.port is not None
        server = self.server
        options = f"-h {_LOOPBACK} -p {self.port} -k {shlex.quote('')}"
        server.launched = True
        server._run(
            [*server._pg_ctl(), "-l", str(server.logfile), "-o", options, "start"],
            timeout=server.timeout + 5,
        )
        server.port = self.port
