"""The servers a storm run measures: the product, the reference, and their stores.

Both servers run as subprocesses in a session of their own (so stopping one reaches
its workers and nothing else), listen on 127.0.0.1 and get the same Redis, the same
JWT secret, the same hold time and the same number of uvicorn workers (uvloop,
httptools, no access log). The product's PostgreSQL is a scratch database created for
the run on the given server and dropped at the end, so a run starts from nothing and
`GET /api/drops` lists exactly the drops the run made.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import redis.asyncio as redis_asyncio
from redis.asyncio import Redis

from app.embedded import EmbeddedStores, running_store_urls
from app.store.client import create_redis
from loadtests.fixtures import asyncpg_dsn

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
READY_TIMEOUT = 120.0  # an embedded PostgreSQL's first start runs initdb
STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Stores:
    database_url: str
    redis_url: str
    access_secret: str
    refresh_secret: str
    hold_ttl_seconds: int


def serve_env(data_dir: Path, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """What every benchmark's `sneakerdrop serve` gets; `overrides` replaces any of it.

    Without DATABASE_URL / REDIS_URL (in the environment or `overrides`) serve starts
    embedded stores under `data_dir` (`embedded_store_urls` finds them).
    """
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RATE_LIMITS": "off",
        # Every generated client comes from 127.0.0.1: no per-address socket limit.
        "SOCKET_CONNECTIONS_PER_IP": "1000000",
        "LOG_LEVEL": "WARNING",
        "DATA_DIR": str(data_dir),  # metrics of several workers, the lock file
        "ENV": "development",
        **(overrides or {}),
    }


def product_env(
    stores: Stores, port: int, data_dir: Path, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The product's environment; `overrides` replaces any of it (the soak's short periods)."""
    given = {
        "DATABASE_URL": stores.database_url,
        "REDIS_URL": stores.redis_url,
        "JWT_ACCESS_SECRET": stores.access_secret,
        "JWT_REFRESH_SECRET": stores.refresh_secret,
        "ACCESS_TOKEN_TTL_SECONDS": "86400",
        "RESERVATION_TTL_SECONDS": str(stores.hold_ttl_seconds),
        "RECONCILE_INTERVAL_SECONDS": "3600",  # its pass would run inside a measured phase
        "PORT": str(port),
    }
    return serve_env(data_dir, {**given, **(overrides or {})})


def embedded_store_urls(data_dir: Path) -> tuple[str, str]:
    """(database URL, Redis URL) of the stores serve uses: the environment's, or the
    embedded ones it started under `data_dir`."""
    database_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    if not (database_url and redis_url):
        running = running_store_urls(data_dir)
        if running is None:
            raise RuntimeError("serve started no embedded stores")
        database_url, redis_url = database_url or running[0], redis_url or running[1]
    if not (database_url and redis_url):
        raise RuntimeError("the server's embedded stores are not running")
    return database_url, redis_url


async def metrics_text(http: aiohttp.ClientSession, url: str, attempts: int = 3) -> str | None:
    """The server's /metrics (all workers), or None when it has none to give.

    A keep-alive connection the server closed under us is tried again.
    """
    for attempt in range(attempts):
        try:
            async with http.get(f"{url}/metrics") as response:
                return await response.text() if response.status == 200 else None
        except aiohttp.ClientError:
            if attempt == attempts - 1:
                raise
    return None


def reference_argv(port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "loadtests.reference.app:app",
        "--app-dir",
        str(ROOT),
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--lifespan",
        "on",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def serve_argv(port: int, workers: int) -> list[str]:
    """`sneakerdrop serve` on 127.0.0.1:`port` with `workers` API processes."""
    script = Path(sys.executable).with_name("sneakerdrop")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]
    return [*command, "serve", "--host", HOST, "--port", str(port), "--workers", str(workers)]


class ServerProcess:
    """One server subprocess: started, waited for, stopped (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, url: str, log: Path):
        self.name = name
        self.process = process
        self.url = url
        self.log = log

    @classmethod
    async def start(
        cls, name: str, argv: list[str], env: dict[str, str], port: int, workdir: Path
    ) -> Self:
        log = workdir / f"{name}.log"
        with log.open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                cwd=workdir,  # no stray .env
                env=env,
                start_new_session=True,
            )
        return cls(name, process, f"http://{HOST}:{port}", log)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def wait_ready(self, http: aiohttp.ClientSession, path: str = "/readyz") -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{self.url}{path}") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT:.0f} s:\n{self.log_tail()}")

    async def stop(self) -> int | None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # the session it was started in
            await self.process.wait()
            return None


async def start_product(
    stores: Stores,
    port: int,
    workers: int,
    workdir: Path,
    overrides: Mapping[str, str] | None = None,
    name: str = "product",
) -> ServerProcess:
    """`sneakerdrop serve`; `name` names its log and data folder in `workdir`."""
    argv = serve_argv(port, workers)
    env = product_env(stores, port, product_data_dir(workdir, name), overrides)
    return await ServerProcess.start(name, argv, env, port, workdir)


def product_data_dir(workdir: Path, name: str = "product") -> Path:
    data_dir = workdir / f"{name}-data"
    data_dir.mkdir(exist_ok=True)
    return data_dir


async def start_reference(stores: Stores, port: int, workers: int, workdir: Path) -> ServerProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": stores.redis_url,
        "JWT_ACCESS_SECRET": stores.access_secret,
        "RESERVATION_TTL_SECONDS": str(stores.hold_ttl_seconds),
    }
    return await ServerProcess.start("reference", reference_argv(port, workers), env, port, workdir)


# --- scratch stores --------------------------------------------------------------------


def with_database(database_url: str, name: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def create_scratch_database(database_url: str) -> str:
    """A new empty database on the server of `database_url`; returns its URL."""
    base = urlsplit(database_url).path.lstrip("/") or "postgres"
    name = f"{base}_storm_{secrets.token_hex(4)}"
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return with_database(database_url, name)


async def drop_database(maintenance_url: str, scratch_url: str) -> None:
    name = urlsplit(scratch_url).path.lstrip("/")
    connection = await asyncpg.connect(asyncpg_dsn(maintenance_url))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def redis_keys(redis_url: str) -> int:
    client = redis_asyncio.Redis.from_url(redis_url)
    try:
        return int(await client.dbsize())
    finally:
        await client.aclose()


async def flush_redis(redis_url: str) -> None:
    client = redis_asyncio.Redis.from_url(redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


def bench_parser(description: str) -> argparse.ArgumentParser:
    """A benchmark's options, each shown with its default in --help."""
    return argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )


def store_options(parser: argparse.ArgumentParser, database: bool = True) -> None:
    """`--database-url` and `--redis-url` (default: the environment's) and `--flush-redis`."""
    if database:
        parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument(
        "--flush-redis", action="store_true", help="empty a non-empty Redis db first"
    )


async def given_or_embedded(
    database_url: str | None, redis_url: str | None, workdir: Path
) -> tuple[str, str, EmbeddedStores | None]:
    """The PostgreSQL server and Redis database given, or embedded ones under `workdir`
    when neither is (the caller stops them: `embedded.stop`)."""
    embedded = None
    if not database_url and not redis_url:
        embedded = EmbeddedStores(workdir / "stores")
        database_url, redis_url = await asyncio.to_thread(embedded.start, True, True)
    if not database_url or not redis_url:
        raise SystemExit("give both --database-url and --redis-url, or neither (embedded)")
    return database_url, redis_url, embedded


async def require_empty(redis_url: str, flush: bool) -> None:
    """A run starts on an empty Redis database; `flush` empties a non-empty one."""
    if await redis_keys(redis_url):
        if not flush:
            raise SystemExit(f"{redis_url} is not empty: pass --flush-redis to empty it")
        await flush_redis(redis_url)


async def fresh_stores(maintenance_url: str, redis_url: str, hold_ttl_seconds: int) -> Stores:
    """A scratch database for the run on that server, and fresh JWT secrets."""
    scratch = await create_scratch_database(maintenance_url)
    access, refresh = secrets.token_urlsafe(48), secrets.token_urlsafe(48)
    return Stores(scratch, redis_url, access, refresh, hold_ttl_seconds)


@contextlib.asynccontextmanager
async def empty_redis(redis_url: str, flush: bool) -> AsyncIterator[Redis]:
    """The app's client on the Redis database of `redis_url`, which must be empty
    (`flush`: emptied first, else the run stops); emptied again at the end."""
    redis = create_redis(redis_url)
    try:
        if await redis.dbsize():
            if not flush:
                sys.exit("the Redis database is not empty: pass --flush-redis to empty it")
            await redis.flushdb()
    except BaseException:
        await redis.aclose()
        raise
    try:
        yield redis
    finally:
        await redis.flushdb()
        await redis.aclose()


@contextlib.asynccontextmanager
async def scratch_stores(prefix: str) -> AsyncIterator[tuple[Stores, Path]]:
    """Stores for a one-off measurement, from DATABASE_URL and REDIS_URL, and a work folder.

    A scratch database is made on that PostgreSQL and dropped at the end; the Redis
    database must be empty and is flushed at the end.
    """
    database_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    if not database_url or not redis_url:
        raise SystemExit("set DATABASE_URL and REDIS_URL (a scratch database is made there)")
    if await redis_keys(redis_url):
        raise SystemExit(f"{redis_url} is not empty")
    stores = await fresh_stores(database_url, redis_url, 3600)
    scratch = stores.database_url
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield stores, workdir
    finally:
        await flush_redis(redis_url)
        await drop_database(database_url, scratch)
        shutil.rmtree(workdir, ignore_errors=True)
