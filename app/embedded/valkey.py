"""The embedded Valkey: a child process with AOF, keyspace events and noeviction."""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
from pathlib import Path

import psutil

from app.embedded.common import (
    _LOOPBACK,
    EmbeddedStartError,
    _log_tail,
    _valkey_server_bin,
    _wait_gone,
    free_port,
)

logger = logging.getLogger(__name__)


def server_options(port: int, directory: Path, logfile: Path) -> list[str]:
    """How sneakerdrop runs Valkey: loopback only, append-only file, expiry events, no
    eviction."""
    return [
        "--bind", _LOOPBACK,
        "--port", str(port),
        "--dir", str(directory),
        "--daemonize", "no",
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--notify-keyspace-events", "Ex",
        # Expired timer keys are found (and announced) by the server's active expiry
        # cycle, hz times a second: 10 by default, 50 here, so the keyspace path
        # returns units sooner than the sweeper's interval.
        "--hz", "50",
        "--maxmemory-policy", "noeviction",
        "--protected-mode", "yes",
        "--logfile", str(logfile),
    ]  # fmt: skip


class _Valkey:
    """A valkey-server child process with its data in `DATA_DIR/valkey`."""

    def __init__(self, data_dir: Path, timeout: float) -> None:
        self.dir = data_dir / "valkey"
        self.logfile = self.dir / "valkey.log"
        self.pidfile = self.dir / "valkey.pid"
        self.timeout = timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    def _stop_orphan(self) -> None:
        """Stop a valkey-server left running on this folder by a crash of ours."""
        try:
            process = psutil.Process(int(self.pidfile.read_text().strip()))
            if (
                not process.name().startswith("valkey-server")
                or process.status() == psutil.STATUS_ZOMBIE
                or process.cwd() != str(self.dir)
            ):
                return
        except (OSError, ValueError, psutil.Error):
            return
        logger.warning(
            "a valkey-server (pid %d) left over by an earlier sneakerdrop still runs on %s; "
            "stopping it first",
            process.pid,
            self.dir,
        )
        with contextlib.suppress(psutil.Error):
            process.terminate()  # SIGTERM: valkey flushes its AOF and exits
            _wait_gone(process, self.timeout)
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                process.kill()
                _wait_gone(process, self.timeout)

    def start(self) -> int:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._stop_orphan()
        binary = _valkey_server_bin()
        for attempt in range(3):
            port = free_port()
            args = [
                str(binary),
                *server_options(port, self.dir, self.logfile),
                "--pidfile", str(self.pidfile),
            ]  # fmt: skip
            started = time.monotonic()
            with self.logfile.open("ab") as console:  # errors before the log is opened
                log_size = console.tell()
                self.process = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=console,
                    cwd=self.dir,
                    start_new_session=True,
                )
            self.port = port
            try:
                self._wait_ready(port)
            except EmbeddedStartError:
                exited = self.process.poll() is not None
                self._kill()
                with self.logfile.open(errors="replace") as log:
                    log.seek(log_size)
                    taken = "Address already in use" in log.read()
                if exited and taken and attempt < 2:
                    logger.info("port %d was taken meanwhile, trying another", port)
                    continue
                raise
            logger.info(
                "embedded Valkey started on %s:%d (data %s) in %.2fs",
                _LOOPBACK,
                port,
                self.dir,
                time.monotonic() - started,
            )
            return port
        raise AssertionError("unreachable")

    def _wait_ready(self, port: int) -> None:
        """Poll until PING answers PONG (not LOADING), the process dies or time runs out."""
        assert self.process is not None
        deadline = time.monotonic() + self.timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedStartError(
                    f"valkey-server exited with code {self.process.returncode}\n"
                    f"{_log_tail(self.logfile)}"
                )
            try:
                with socket.create_connection((_LOOPBACK, port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    reply = conn.recv(256)
                if reply.startswith(b"+PONG"):
                    return
                last = reply.decode(errors="replace").strip()
            except OSError as exc:
                last = str(exc)
            time.sleep(0.02)
        raise EmbeddedStartError(
            f"valkey-server did not answer PING within {self.timeout:.0f}s ({last})\n"
            f"{_log_tail(self.logfile)}"
        )

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None
        self.port = None

    def stop(self) -> None:
        process, port = self.process, self.port
        if process is None:
            return
        if port is None:  # interrupted while launching: nothing to flush yet
            self._kill()
            return
        started = time.monotonic()
        if process.poll() is None:
            try:  # SHUTDOWN flushes the append-only file, then the server exits
                with socket.create_connection((_LOOPBACK, port), timeout=5) as conn:
                    conn.sendall(b"SHUTDOWN\r\n")
                    conn.settimeout(self.timeout)
                    reply = conn.recv(256)  # b"" once the server closed the connection
                if reply:
                    logger.warning("valkey SHUTDOWN answered %r", reply)
            except OSError as exc:
                logger.warning("could not send SHUTDOWN to valkey: %s", exc)
            try:
                process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                logger.warning("valkey did not exit after SHUTDOWN; sending SIGTERM")
                process.terminate()
                try:
                    process.wait(timeout=self.timeout)
                except subprocess.TimeoutExpired:
                    logger.warning("valkey ignored SIGTERM; killing it")
                    process.kill()
                    process.wait()
        logger.info("embedded Valkey stopped in %.2fs", time.monotonic() - started)
        self.process = None
        self.port = None
