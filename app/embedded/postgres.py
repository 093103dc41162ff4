"""The embedded PostgreSQL: initdb once, pg_ctl start and stop (as a system user when root)."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from app.embedded.common import (
    _LOOPBACK,
    _MAX_SOCKET_PATH,
    DATABASE_NAME,
    POSTGRES_ROLE,
    POSTGRES_SYSTEM_USER,
    EmbeddedStartError,
    _add_mode,
    _end_group,
    _ensure_system_user,
    _log_tail,
    _make_traversable,
    _postgres_bin,
    _wait_gone,
    free_port,
)

logger = logging.getLogger(__name__)


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

    def _pg_ctl(self) -> list[str]:
        """pg_ctl on this cluster, waiting (up to the timeout) for what it is asked."""
        return ["pg_ctl", "-D", str(self.pgdata), "-w", "-t", str(int(self.timeout))]

    def _pg_ctl_stop(self, mode: str) -> bool:
        try:
            self._run([*self._pg_ctl(), "-m", mode, "stop"], timeout=self.timeout + 5)
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
            port = free_port()
            options = f"-h {_LOOPBACK} -p {port} -k {shlex.quote(socket_dir)}"
            log_size = self.logfile.stat().st_size
            started = time.monotonic()
            self.launched = True
            try:
                self._run(
                    [*self._pg_ctl(), "-l", str(self.logfile), "-o", options, "start"],
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
