"""The `sneakerdrop` command: serve, migrate and the operator commands.

Every subcommand but `verify-order` first makes sure both stores exist: what
`DATABASE_URL` / `REDIS_URL` leave unset runs embedded under `DATA_DIR` (app.embedded)
for as long as the command runs, and is stopped in order at the end, also after Ctrl-C
or SIGTERM. `verify-order` reads a published record over HTTP (or a saved copy) and
needs no settings and no stores: anyone can run it against any server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import importlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import ValidationError

from app.config import Settings, load_settings
from app.embedded import (
    DataDirInUse,
    EmbeddedStartError,
    EmbeddedStores,
    EmbeddedUnavailable,
    ensure_available,
    running_store_urls,
)
from app.logs import configure_logging, log_uncaught_errors, logging_config
from app.verify_order import DEFAULT_URL
from app.verify_order import run as verify_order

logger = logging.getLogger("sneakerdrop.cli")

# One API process per core: on 2 cores, 2 workers served 1.4x (holds) to 1.7x (sold
# out) the reserves of one (docs/BENCHMARKS.md). `--workers` overrides it.
DEFAULT_WORKERS = max(1, min(os.cpu_count() or 1, 16))


def _terminate_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Let no SIGINT / SIGTERM cut the ordered stop of the stores short."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def backing_stores(
    settings: Settings, *, redis: bool = True, attach: bool = False
) -> Iterator[tuple[Settings, bool]]:
    """Settings whose DATABASE_URL (and REDIS_URL) are set, starting embedded servers if needed.

    The embedded URLs are exported to os.environ so that uvicorn workers and anything
    calling load_settings() see them. Yields (settings, whether PostgreSQL is embedded).
    With `attach`, an operator command uses the stores of a `serve` already running
    on this DATA_DIR instead of failing.
    """
    want_postgres = settings.database_url is None
    want_redis = redis and settings.redis_url is None
    if not (want_postgres or want_redis):
        yield settings, False
        return
    # Before anything starts: ENV=production, or no `sneakerdrop[embedded]`, says so plainly.
    ensure_available(postgres=want_postgres, redis=want_redis, env=settings.env)
    running = running_store_urls(settings.data_dir) if attach else None
    if running is not None:
        database_url, redis_url = running
        if database_url and want_postgres:
            os.environ["DATABASE_URL"] = database_url
        if redis_url and want_redis:
            os.environ["REDIS_URL"] = redis_url
        yield load_settings(), False
        return
    stores = EmbeddedStores(settings.data_dir)
    try:
        database_url, redis_url = stores.start(postgres=want_postgres, redis=want_redis)
        if database_url:
            os.environ["DATABASE_URL"] = database_url
        if redis_url:
            os.environ["REDIS_URL"] = redis_url
        yield load_settings(), want_postgres
    finally:
        with _signals_deferred():
            stores.stop()


def _migrate(database_url: str | None) -> None:
    from app.db.migrate import run_migrations

    assert database_url is not None
    logger.info("applying database migrations")
    run_migrations(database_url)


def _command(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    """An async operator command of app.commands (imported late: it pulls in the whole app)."""
    module = importlib.import_module("app.commands")
    function: Callable[..., Coroutine[Any, Any, Any]] = getattr(module, name)
    return function


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from app.runtime.event_loop import LOOP_FACTORY, check_event_loop
    from app.runtime.http_limits import serve_protocol

    # Fails here, before anything starts, when uvicorn lacks an internal it overrides.
    http = serve_protocol(enabled=settings.http_limits == "on")
    loop = "uvloop"  # EVENT_LOOP=uvloop: uvicorn's own
    if settings.event_loop == "batch-accept":
        check_event_loop()  # as above, for uvloop and uvicorn's loop setting
        loop = LOOP_FACTORY
    host = args.host or settings.host
    port = args.port or settings.port
    # The workers read their settings anew: `--host` is their HOST too (the address a
    # worker advertises for Socket.IO hand-overs defaults to it).
    os.environ["HOST"], os.environ["PORT"] = host, str(port)
    with backing_stores(settings) as (settings, _):
        _migrate(settings.database_url)
        logger.info("serving on http://%s:%d with %d worker(s)", host, port, args.workers)
        if args.workers > 1:
            _share_metrics(settings.data_dir / "metrics")
        config = uvicorn.Config(
            "app.cli:worker_app",
            factory=True,
            host=host,
            port=port,
            workers=args.workers,
            loop=loop,  # uvloop that accepts in batches (app/runtime/event_loop.py)
            http=http,  # httptools with a bounded request head (app/runtime/http_limits.py)
            lifespan="on",
            server_header=False,  # no `server: uvicorn` on any response
            date_header=True,
            # X-Forwarded-For is believed only from TRUSTED_PROXIES.
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=settings.trusted_proxies or None,
            access_log=False,
            # JSON lines from uvicorn's loggers too, in the supervisor and every worker
            # (uvicorn applies log_config again in each process it spawns).
            log_config=logging_config(settings.log_level),
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        )
        return _run_workers(config)


def _run_workers(config: Any) -> int:
    """uvicorn.run's own two cases, with an exit code that says how they ended.

    0 after a graceful stop (SIGINT / SIGTERM); STARTUP_FAILURE (3) when the app could
    not start: with one worker uvicorn exits so itself, but with several its supervisor
    stops when a worker fails to start and returns as if all were well, so a process
    manager would see a clean exit and not restart it.
    """
    from uvicorn import Server
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    if config.workers <= 1:
        server = Server(config=config)
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        return 0 if server.started else STARTUP_FAILURE
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    failed = [p.pid for p in supervisor.processes if p.exitcode == STARTUP_FAILURE]
    if failed:
        logger.critical("a worker could not start; serve stops", extra={"workers": failed})
        return STARTUP_FAILURE
    return 0


def worker_app() -> Any:
    """The factory each uvicorn worker calls: app.main.create_app, a failure to build the app
    logged as one JSON line (multiprocessing would print a raw traceback) before it exits."""
    try:
        from app.main import create_app

        return create_app()
    except Exception:
        logger.critical("the app could not be created", exc_info=True)
        from uvicorn.config import STARTUP_FAILURE

        # uvicorn's supervisor restarts a worker that dies, except with this code.
        raise SystemExit(STARTUP_FAILURE) from None


def _share_metrics(folder: Path) -> None:
    """Let /metrics add up every worker: prometheus-client's multiprocess mode."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def _migrate_only(args: argparse.Namespace, settings: Settings) -> int:
    with backing_stores(settings, redis=False) as (settings, _):
        _migrate(settings.database_url)
    print("database is up to date")
    return 0


def _read_password(given: str | None) -> str:
    if given:
        return given
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password (again): ") != first:
        raise SystemExit("passwords do not match")
    return first


def _operator(name: str) -> Callable[[argparse.Namespace, Settings], int]:
    """Run app.commands.<name>(settings, ...) with the stores up (schema too when embedded)."""

    def handler(args: argparse.Namespace, settings: Settings) -> int:
        extra: list[Any] = []
        if name == "create_admin":
            password = _read_password(args.password)
            if not password:
                raise SystemExit("a password is required")
            extra = [args.email, password]
        function = _command(name)
        with backing_stores(settings, attach=True) as (settings, embedded_postgres):
            if embedded_postgres:  # ours, maybe brand-new: give it its schema
                _migrate(settings.database_url)
            result = asyncio.run(function(settings, *extra))
        return result if isinstance(result, int) else 0

    return handler


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sneakerdrop",
        description="Reservation service for limited sneaker drops.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the API (embedded stores for unset URLs)")
    serve.add_argument("--host", help="listen address (default: HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default: PORT, 4000)")
    serve.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"API processes (default: {DEFAULT_WORKERS})",
    )
    serve.set_defaults(handler=_serve)

    migrate = sub.add_parser("migrate", help="apply the database migrations")
    migrate.set_defaults(handler=_migrate_only)

    admin = sub.add_parser("create-admin", help="create an admin account (or promote one)")
    admin.add_argument("email")
    admin.add_argument("--password", help="default: prompted, or read from stdin")
    admin.set_defaults(handler=_operator("create_admin"))

    demo = sub.add_parser("demo", help="create a sample drop")
    demo.set_defaults(handler=_operator("demo"))

    reconcile = sub.add_parser("reconcile", help="rebuild Redis from PostgreSQL and repair drift")
    reconcile.add_argument("--once", action="store_true", required=True, help="one pass, then exit")
    reconcile.set_defaults(handler=_operator("reconcile_once"))

    check = sub.add_parser("check", help="print each drop's invariant; non-zero exit on drift")
    check.set_defaults(handler=_operator("check"))

    verify = sub.add_parser(
        "verify-order",
        help="recompute a queue or draw drop's order from its revealed seed; non-zero on mismatch",
    )
    verify.add_argument("drop_id", metavar="DROP_ID")
    source = verify.add_mutually_exclusive_group()
    source.add_argument(
        "--url", help=f"the server to fetch the record from (default: {DEFAULT_URL})"
    )
    source.add_argument(
        "--file", type=Path, metavar="PATH", help="a saved copy instead: {fairness, entries}"
    )
    verify.add_argument(
        "--save", type=Path, metavar="PATH", help="also write the fetched record to this file"
    )
    verify.set_defaults(handler=None)  # main() runs it before settings and stores
    return parser


def _verify_order(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.save is not None and args.file is not None:
        parser.error("--save writes a fetched record: it does not go with --file")
    return verify_order(args.drop_id, url=args.url, file=args.file, save_to=args.save)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "verify-order":  # a public record: no settings, no stores, no logs
        return _verify_order(parser, args)
    if args.command == "serve" and args.workers < 1:
        print("sneakerdrop: --workers must be at least 1", file=sys.stderr)
        return 2
    # Every line on stderr is a JSON log line (app/logs.py), errors of the start included.
    configure_logging("INFO")
    log_uncaught_errors()
    try:
        settings = load_settings()
    except ValidationError as exc:
        logger.error("invalid configuration: %s", exc)
        return 2
    configure_logging(settings.log_level)
    # SIGTERM behaves like Ctrl-C: uvicorn stops gracefully on both (and re-raises the
    # signal afterwards, which this turns into a KeyboardInterrupt it swallows), and
    # before or after uvicorn runs it unwinds through the `finally` that stops the stores.
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    try:
        return handler(args, settings)
    except EmbeddedUnavailable as exc:
        logger.error("%s", exc)
        return 2
    except DataDirInUse as exc:
        logger.error("%s", exc)
        return 1
    except EmbeddedStartError as exc:
        logger.error("an embedded store did not start: %s", exc)
        return 1
    except KeyboardInterrupt:
        logger.info("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
